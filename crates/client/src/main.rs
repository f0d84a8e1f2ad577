//! The `ferry` command; everything but start-up lives in the library (`ferry_client::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = ferry_client::cli::parse();
    ExitCode::from(ferry_client::cli::run(&cli))
}
