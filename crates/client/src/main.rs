//! The `ferry` command; everything but start-up lives in the library (`ferry_client::cli`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // ferry_secure's own note on trust on first use would repeat the `ferry:` line about it.
    let filter = "warn,ferry_secure::client=error";
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter)).init();
    let cli = ferry_client::cli::Cli::parse();
    ExitCode::from(ferry_client::cli::run(&cli))
}
