//! The server's logger: `RUST_LOG` filtering (by `env_filter`, env_logger's own filter), and
//! one line per record written straight into the bytes queued for the log thread (see
//! [`crate::logging`]), in env_logger's default layout:
//!
//! ```text
//! [2026-11-29T21:00:14Z INFO  ferry_server::session::uploads] 127.0.0.1:50210: stored a as a (4.0 KiB, 12.3 MiB/s)
//! ```
//!
//! A server logs a line per stored file, so the line is cheap: the timestamp is rendered once
//! a second per thread, styles are only written when wanted (never stripped afterwards), and
//! the line is formatted once into the buffer the log thread takes (no copies, no lock).

use std::cell::RefCell;
use std::io::Write;
use std::time::SystemTime;

use log::{Level, Log, Metadata, Record};

use crate::logging::Background;

/// Continuation lines of a message are indented this much, as env_logger's are.
const INDENT: &[u8] = b"\n    ";
/// The levels as env_logger shows them, padded to 5 (`Level::Error as usize` is 1).
const LEVELS: [&[u8]; 5] = [b"ERROR", b"WARN ", b"INFO ", b"DEBUG", b"TRACE"];
/// Room for a typical line, so that formatting it rarely grows the buffer.
const LINE_CAPACITY: usize = 192;

/// Writes records that pass the `RUST_LOG` filter to the log thread, one line each.
#[derive(Debug)]
pub struct Logger {
    filter: env_filter::Filter,
    styled: bool,
    out: Background,
}

impl Logger {
    /// A logger filtering by `RUST_LOG` (`info` when unset), writing to `out`, with terminal
    /// styles (coloured levels, dimmed brackets) when `styled`.
    pub fn new(out: Background, styled: bool) -> Self {
        let mut filter = env_filter::Builder::new();
        match std::env::var("RUST_LOG") {
            Ok(spec) => filter.parse(&spec),
            Err(_) => filter.parse("info"),
        };
        Self {
            filter: filter.build(),
            styled,
            out,
        }
    }

    /// Makes this the logger of the process, and sets the maximum level `log` checks first.
    pub fn install(self) -> Result<(), log::SetLoggerError> {
        let max = self.filter.filter();
        log::set_boxed_logger(Box::new(self))?;
        log::set_max_level(max);
        Ok(())
    }

    /// The line for `record`, newline included.
    fn line(&self, record: &Record<'_>) -> Vec<u8> {
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        let level = record.level();
        let target = record.target();
        // Writing into a Vec cannot fail.
        if self.styled {
            let subtle = anstyle::AnsiColor::BrightBlack.on_default();
            let _ = write!(line, "{subtle}[{subtle:#}");
            with_timestamp(|stamp| line.extend_from_slice(stamp));
            let style = level_style(level);
            let _ = write!(line, " {style}{level:<5}{style:#}");
            if !target.is_empty() {
                let _ = write!(line, " {target}");
            }
            let _ = write!(line, "{subtle}]{subtle:#} ");
        } else {
            line.push(b'[');
            with_timestamp(|stamp| line.extend_from_slice(stamp));
            line.push(b' ');
            line.extend_from_slice(LEVELS[level as usize - 1]);
            if !target.is_empty() {
                line.push(b' ');
                line.extend_from_slice(target.as_bytes());
            }
            line.extend_from_slice(b"] ");
        }
        let start = line.len();
        match record.args().as_str() {
            Some(text) => line.extend_from_slice(text.as_bytes()),
            None => {
                let _ = write!(line, "{}", record.args());
            }
        }
        if line[start..].contains(&b'\n') {
            let message = line.split_off(start);
            for (i, part) in message.split(|&b| b == b'\n').enumerate() {
                if i > 0 {
                    line.extend_from_slice(INDENT);
                }
                line.extend_from_slice(part);
            }
        }
        line.push(b'\n');
        line
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if self.filter.matches(record) {
            self.out.send(self.line(record));
        }
    }

    fn flush(&self) {}
}

/// env_logger's colours for each level.
fn level_style(level: Level) -> anstyle::Style {
    use anstyle::AnsiColor;
    match level {
        Level::Trace => AnsiColor::Cyan.on_default(),
        Level::Debug => AnsiColor::Blue.on_default(),
        Level::Info => AnsiColor::Green.on_default(),
        Level::Warn => AnsiColor::Yellow.on_default(),
        Level::Error => AnsiColor::Red.on_default().effects(anstyle::Effects::BOLD),
    }
}

/// Calls `f` with the current time in RFC 3339, UTC, to the second (`2026-11-29T21:00:14Z`),
/// rendered at most once a second by each thread.
fn with_timestamp(f: impl FnOnce(&[u8])) {
    thread_local! {
        static LAST: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let now = jiff::Timestamp::try_from(SystemTime::now()).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let second = now.as_second();
    LAST.with_borrow_mut(|(at, shown)| {
        if *at != second {
            let whole = jiff::Timestamp::from_second(second).unwrap_or(now);
            *shown = format!("{whole:.0}");
            *at = second;
        }
        f(shown.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The line `logger` makes of a record at `level` from `target` saying `args`.
    fn line(logger: &Logger, level: Level, target: &str, args: std::fmt::Arguments<'_>) -> String {
        let record = Record::builder()
            .level(level)
            .target(target)
            .args(args)
            .build();
        String::from_utf8(logger.line(&record)).unwrap()
    }

    fn logger(styled: bool) -> Logger {
        let (out, _) = Background::spawn(std::io::sink()).unwrap();
        Logger::new(out, styled)
    }

    #[test]
    fn lines_have_env_loggers_default_layout() {
        let plain = logger(false);
        let size = 4096;
        let shown = line(
            &plain,
            Level::Info,
            "ferry_server::session::uploads",
            format_args!("127.0.0.1:5: stored a as a ({size} B)"),
        );
        let (stamp, rest) = shown.split_at(21);
        assert_eq!(
            rest,
            " INFO  ferry_server::session::uploads] 127.0.0.1:5: stored a as a (4096 B)\n"
        );
        // `[2026-11-29T21:00:14Z`: RFC 3339, UTC, to the second.
        let stamp = stamp.strip_prefix('[').unwrap();
        let parsed: jiff::Timestamp = stamp.parse().unwrap();
        assert!(stamp.ends_with('Z') && stamp.len() == 20, "{stamp}");
        let now = jiff::Timestamp::now().as_second();
        assert!((parsed.as_second() - now).abs() < 60, "{stamp}");
        for level in [Level::Debug, Level::Trace] {
            assert!(line(&plain, level, "t", format_args!("x")).contains(&format!(" {level} t]")));
        }
        assert!(line(&plain, Level::Error, "t", format_args!("x")).contains(" ERROR t] x\n"));
        assert!(line(&plain, Level::Warn, "", format_args!("x")).contains(" WARN ] x\n"));
    }

    #[test]
    fn continuation_lines_are_indented() {
        let shown = line(&logger(false), Level::Warn, "t", format_args!("a\nb\n"));
        assert!(shown.ends_with(" WARN  t] a\n    b\n    \n"), "{shown:?}");
    }

    #[test]
    fn styles_only_when_asked() {
        let shown = line(&logger(true), Level::Info, "t", format_args!("x"));
        assert!(shown.contains("\u{1b}[32mINFO \u{1b}[0m t"), "{shown:?}");
        assert!(shown.starts_with("\u{1b}[90m[\u{1b}[0m"), "{shown:?}");
        let plain = line(&logger(false), Level::Info, "t", format_args!("x"));
        assert!(!plain.contains('\u{1b}'), "{plain:?}");
    }

    #[test]
    fn the_timestamp_follows_the_clock() {
        let mut first = String::new();
        with_timestamp(|s| first = String::from_utf8(s.to_vec()).unwrap());
        std::thread::sleep(Duration::from_millis(1100));
        with_timestamp(|s| assert_ne!(s, first.as_bytes()));
    }
}
