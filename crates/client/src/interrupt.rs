//! Ctrl-C: before the process ends, the user learns which files were confirmed and whether
//! running the same command again takes up the rest (the server keeps what it verified).

use std::sync::{Arc, Mutex, PoisonError};

use indicatif::MultiProgress;

use ferry_proto::Name;

use crate::error::exit;

/// Names listed in the message; the rest are counted.
const NAMES_SHOWN: usize = 3;

/// What the message on Ctrl-C says, kept up to date by the console.
struct Tally {
    /// What a confirmed file was: "stored", "saved", ...
    word: &'static str,
    /// Files in the run.
    of: usize,
    confirmed: Vec<Name>,
    /// Running the command again resumes (not so for standard input or output).
    resumable: bool,
    /// The progress bars, cleared before the message.
    bars: Option<MultiProgress>,
}

/// Shared between the console, which counts, and the thread that waits for SIGINT.
#[derive(Clone)]
pub(crate) struct Interrupt(Arc<Mutex<Tally>>);

impl Interrupt {
    /// For a run of `of` files, each confirmed as `word` ("stored"); `bars` are cleared first.
    pub(crate) fn new(
        word: &'static str,
        of: usize,
        resumable: bool,
        bars: Option<MultiProgress>,
    ) -> Self {
        Self(Arc::new(Mutex::new(Tally {
            word,
            of,
            confirmed: Vec::new(),
            resumable,
            bars,
        })))
    }

    /// A file was confirmed.
    pub(crate) fn confirmed(&self, name: &Name) {
        self.lock().confirmed.push(name.clone());
    }

    /// Waits for SIGINT on a thread of its own; then says what was done and exits with
    /// [`exit::INTERRUPTED`].
    #[cfg(unix)]
    pub(crate) fn watch(&self) -> std::io::Result<()> {
        use signal_hook::consts::SIGINT;
        use signal_hook::iterator::Signals;
        let mut signals = Signals::new([SIGINT])?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("ferry-interrupt".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    me.stop();
                }
            })?;
        Ok(())
    }

    /// Waits for Ctrl-C (or Ctrl-Break) in the console; the handler runs on a thread of its
    /// own, then says what was done and exits with [`exit::INTERRUPTED`].
    #[cfg(windows)]
    pub(crate) fn watch(&self) -> std::io::Result<()> {
        let me = self.clone();
        ctrlc::set_handler(move || me.stop()).map_err(std::io::Error::other)
    }

    /// Clears the bars, says what was confirmed and exits.
    fn stop(&self) -> ! {
        let tally = self.lock();
        if let Some(bars) = &tally.bars {
            let _ = bars.clear();
        }
        eprintln!("{}", tally.message());
        std::process::exit(i32::from(exit::INTERRUPTED));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Tally {
    fn message(&self) -> String {
        let n = self.confirmed.len();
        let mut names: Vec<String> = self
            .confirmed
            .iter()
            .take(NAMES_SHOWN)
            .map(ToString::to_string)
            .collect();
        if n > NAMES_SHOWN {
            names.push(format!("and {} more", n - NAMES_SHOWN));
        }
        let listed = if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        };
        let next = match (n == self.of, self.resumable) {
            (true, _) => "",
            (false, true) => "; run the same command again to resume the rest",
            (false, false) => {
                "; the rest cannot be resumed (standard input or output, or --legacy): \
                 running the command again starts it over"
            }
        };
        format!(
            "ferry: interrupted: {n} of {} files confirmed {}{listed}{next}",
            self.of, self.word
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_lists_what_was_confirmed_and_says_how_to_go_on() {
        let i = Interrupt::new("stored", 5, true, None);
        assert_eq!(
            i.lock().message(),
            "ferry: interrupted: 0 of 5 files confirmed stored; run the same command again to resume the rest"
        );
        for n in ["a", "b", "c", "d"] {
            i.confirmed(&Name::parse(n).unwrap());
        }
        assert_eq!(
            i.lock().message(),
            "ferry: interrupted: 4 of 5 files confirmed stored (a, b, c, and 1 more); run the same command again to resume the rest"
        );
        i.lock().resumable = false;
        assert!(i.lock().message().contains("cannot be resumed"));
    }
}
