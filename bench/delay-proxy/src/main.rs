//! `ferry-delay-proxy LISTEN_PORT TARGET_PORT DELAY_MS MBIT`: forwards every connection to
//! 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT, each direction delayed by DELAY_MS and
//! paced at MBIT megabits per second (see the library's documentation). Prints `listening`
//! once it accepts connections; runs until killed.

use ferry_delay_proxy::Link;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

/// The command line, for errors.
const USAGE: &str = "usage: ferry-delay-proxy LISTEN_PORT TARGET_PORT DELAY_MS MBIT \
                     (ports on 127.0.0.1, DELAY_MS at most an hour, MBIT at least 1)";

/// Parses the four arguments: the port to listen on, the target's address and the link.
fn parse(args: &[String]) -> Option<(u16, SocketAddr, Link)> {
    let [listen, target, delay_ms, mbit] = args else {
        return None;
    };
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, target.parse().ok()?));
    let link = Link::new(delay_ms.parse().ok()?, mbit.parse().ok()?)?;
    Some((listen.parse().ok()?, target, link))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((port, target, link)) = parse(&args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let listener = match ferry_delay_proxy::listen(port) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("ferry-delay-proxy: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "listening")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ferry_delay_proxy::serve(&listener, target, link)
}
