//! What the `ferry` command shows while it runs: progress bars on a terminal, one line per
//! file for people (on stderr) or one JSON object per file (on stdout).

use std::io::Write;
use std::path::PathBuf;

use indicatif::HumanBytes;

use ferry_proto::{Code, Name};
use ferry_secure::Fingerprint;

use crate::error::exit;
use crate::interrupt::Interrupt;
use crate::progress::Progress;
use crate::report::{FileReport, Observer, Outcome, Retry, Status};
use crate::target::Target;

/// Which command is running, for wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Send,
    Legacy,
    Get,
}

/// The observer the binary uses.
pub(crate) struct Console {
    verb: Verb,
    json: bool,
    quiet: bool,
    progress: Progress,
    /// Where trust on first use records certificates, for the message.
    known_hosts: Option<PathBuf>,
    /// Files in the run.
    count: usize,
    /// What Ctrl-C reports, once [`Console::interruptible`].
    interrupt: Option<Interrupt>,
}

impl Console {
    pub(crate) fn new(
        verb: Verb,
        json: bool,
        quiet: bool,
        bars: bool,
        count: usize,
        bytes: Option<u64>,
    ) -> Self {
        Self {
            verb,
            json,
            quiet,
            progress: Progress::new(bars && !quiet, count, bytes),
            known_hosts: None,
            count,
            interrupt: None,
        }
    }

    /// Names the known-hosts file in the message about a server trusted on first use.
    pub(crate) fn with_known_hosts(mut self, path: Option<PathBuf>) -> Self {
        self.known_hosts = path;
        self
    }

    /// On Ctrl-C, says which files were confirmed and, if `resumable`, that running the same
    /// command again resumes, then exits ([`exit::INTERRUPTED`]).
    pub(crate) fn interruptible(mut self, resumable: bool) -> Self {
        let word = match self.verb {
            Verb::Send => "stored",
            Verb::Get => "saved",
            Verb::Legacy => "sent",
        };
        let interrupt = Interrupt::new(word, self.count, resumable, self.progress.bars());
        match interrupt.watch() {
            Ok(()) => self.interrupt = Some(interrupt),
            Err(e) => log::debug!("cannot watch for Ctrl-C: {e}"),
        }
        self
    }

    /// Removes the bars and prints how the run ended.
    pub(crate) fn finish(&self, outcome: &Outcome, seconds: f64) {
        self.progress.finish();
        if self.json {
            print_json(&outcome.summary_json(seconds));
        }
        if let Some(e) = &outcome.error {
            eprintln!("ferry: {e}");
            // Standard input and output cannot be taken up again: no hint for them alone.
            let cut = outcome
                .files
                .iter()
                .any(|f| f.status == Status::Incomplete && f.path.is_some());
            if cut && self.verb != Verb::Legacy && e.exit_code() == exit::NETWORK {
                eprintln!("ferry: run the same command again to resume");
            }
        } else if !self.quiet && !self.json && outcome.files.len() > 1 {
            let ok = outcome
                .files
                .iter()
                .filter(|f| f.status.is_success())
                .count();
            let bytes: u64 = outcome.files.iter().map(|f| f.bytes).sum();
            eprintln!(
                "{ok} of {} files, {} in {seconds:.1} s",
                outcome.files.len(),
                HumanBytes(bytes)
            );
        }
    }

    fn line(&self, r: &FileReport) -> String {
        let size = HumanBytes(r.size.unwrap_or(r.bytes));
        let resumed = if r.offset > 0 {
            format!(", resumed at {}", HumanBytes(r.offset))
        } else {
            String::new()
        };
        let took = format!("{size} in {:.1} s{resumed}", r.seconds);
        let why = if r.detail.is_empty() {
            r.status.as_str().replace('_', " ")
        } else {
            r.detail.clone()
        };
        match (r.status, self.verb) {
            (Status::Code(Code::Stored), Verb::Get) => match &r.path {
                Some(p) => format!("saved {} to {} ({took})", r.name, p.display()),
                None => format!("wrote {} to standard output ({took})", r.name),
            },
            (Status::Code(Code::Stored), _) => {
                if r.detail.is_empty() || r.detail == r.name.as_str() {
                    format!("stored {} ({took})", r.name)
                } else {
                    format!("stored {} as {} ({took})", r.name, r.detail)
                }
            }
            (Status::Sent, _) => {
                format!("sent {} ({took}; the seed server confirms nothing)", r.name)
            }
            (_, Verb::Send | Verb::Legacy) if r.local => {
                format!("could not send {}: {why}", r.name)
            }
            (_, _) if r.refused => format!("server refused {}: {why}", r.name),
            (Status::Incomplete, _) => format!("incomplete {}: {why}", r.name),
            (Status::Code(code), Verb::Get) if code == Code::Exists || code == Code::Io => {
                format!("not saved {}: {why}", r.name)
            }
            (Status::Code(code), Verb::Get) => format!("failed {} ({code}): {why}", r.name),
            (Status::Code(code), _) => {
                format!("server could not store {} ({code}): {why}", r.name)
            }
        }
    }
}

impl Observer for Console {
    fn started(&mut self, name: &Name, size: Option<u64>, from: u64) {
        self.progress.start_file(name, size, from);
    }

    fn verifying(&mut self, name: &Name, bytes: u64) {
        self.progress.verifying(name, bytes);
    }

    fn advanced(&mut self, bytes: u64) {
        self.progress.advance(bytes);
    }

    fn finished(&mut self, report: &FileReport) {
        if let Some(i) = self
            .interrupt
            .as_ref()
            .filter(|_| report.status.is_success())
        {
            i.confirmed(&report.name);
        }
        if self.json {
            print_json(&report.to_json());
        }
        let show = !report.status.is_success() || !(self.json || self.quiet);
        let line = show.then(|| self.line(report));
        self.progress.file_done(line.as_deref());
    }

    fn trusted(&mut self, target: &Target, fingerprint: &Fingerprint) {
        let file = self.known_hosts.as_ref().map(|p| p.display().to_string());
        if self.json {
            print_json(&serde_json::json!({
                "type": "trusted",
                "server": target.to_string(),
                "fingerprint": fingerprint.to_string(),
                "known_hosts": file,
            }));
        }
        // Said even with --quiet: it is a decision about trust the user should know of.
        let recorded = file.map_or_else(String::new, |f| format!(" (recorded in {f})"));
        self.progress.println(&format!(
            "ferry: trusted {target} on first use: certificate {fingerprint}{recorded}; \
             a different certificate will be refused from now on"
        ));
    }

    fn retrying(&mut self, retry: &Retry) {
        self.progress.rewind();
        if self.json {
            print_json(&retry.to_json());
        }
        if !self.quiet {
            self.progress.println(&format!(
                "ferry: {}; retrying in {:.1} s ({} of {})",
                retry.reason,
                retry.delay.as_secs_f64(),
                retry.retry,
                retry.of
            ));
        }
    }
}

fn print_json(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout is not worth a panic; the exit code still tells.
    let _ = writeln!(out, "{v}").and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: Status, refused: bool, detail: &str) -> FileReport {
        let mut r = FileReport::new(Name::parse("photo.jpg").unwrap(), None, Some(2048), status);
        r.refused = refused;
        r.detail = detail.into();
        r
    }

    #[test]
    fn lines_say_what_happened_in_words() {
        let send = Console::new(Verb::Send, false, false, false, 1, Some(0));
        let refused = report(
            Status::Code(Code::Exists),
            true,
            "a file of that name exists (server policy: refuse)",
        );
        assert_eq!(
            send.line(&refused),
            "server refused photo.jpg: a file of that name exists (server policy: refuse)"
        );
        let bare = report(Status::Code(Code::TooLarge), true, "");
        assert_eq!(send.line(&bare), "server refused photo.jpg: too large");
        let renamed = report(Status::Code(Code::Stored), false, "photo (1).jpg");
        assert!(send
            .line(&renamed)
            .starts_with("stored photo.jpg as photo (1).jpg (2.00 KiB"));
        let broken = report(Status::Code(Code::DigestMismatch), false, "");
        assert_eq!(
            send.line(&broken),
            "server could not store photo.jpg (digest mismatch): digest mismatch"
        );
        let get = Console::new(Verb::Get, false, false, false, 1, None);
        let cut = report(Status::Incomplete, false, "the connection ended first");
        assert_eq!(
            get.line(&cut),
            "incomplete photo.jpg: the connection ended first"
        );
    }
}
