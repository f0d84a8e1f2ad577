//! The `ferry` command; everything but start-up lives in the library (`ferry_client::cli`).

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The log's lines read as the tool's own (`ferry: warning: ...`), not as a log's.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            let level = match record.level() {
                log::Level::Warn => "warning".to_owned(),
                other => other.as_str().to_lowercase(),
            };
            writeln!(buf, "ferry: {level}: {}", record.args())
        })
        .init();
    let cli = ferry_client::cli::parse();
    ExitCode::from(ferry_client::cli::run(&cli))
}
