//! What the `ferry` command shows while it runs: progress bars on a terminal, one line per
//! file for people (on stderr) or one JSON object per file (on stdout).

use std::path::{Component, PathBuf};

use indicatif::HumanBytes;

use ferry_proto::name::escape;
use ferry_proto::{Code, Entry, EntryKind, Name};
use ferry_secure::Fingerprint;

use crate::error::{after_name, exit};
use crate::interrupt::Interrupt;
use crate::progress::Progress;
use crate::report::{entries, FileReport, Observer, Outcome, Retry, Skipped, Status};
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
        let interrupt = Interrupt::new(self.done(), self.count, resumable, self.progress.bars());
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
        } else if !self.quiet && !self.json {
            let files = outcome.files.iter().filter(|f| f.kind != EntryKind::Folder);
            // One file alone has said how it ended; folders alone have said nothing.
            let told = files.clone().count() + outcome.skipped.len();
            let only_folders = told == 0 && !outcome.files.is_empty();
            if only_folders {
                eprintln!("{} in {seconds:.1} s", self.tally(outcome));
            } else if told > 1 || outcome.left_out > 0 {
                let bytes: u64 = files.map(|f| f.bytes).sum();
                eprintln!(
                    "{}, {} in {seconds:.1} s",
                    self.tally(outcome),
                    HumanBytes(bytes)
                );
            }
        }
    }

    /// What became of a file that went through: `stored`, `saved` or `sent`.
    fn done(&self) -> &'static str {
        match self.verb {
            Verb::Send => "stored",
            Verb::Get => "saved",
            Verb::Legacy => "sent",
        }
    }

    /// What the user can do about a refusal, keyed on its code (never on the server's words,
    /// which are for people): `Exists` says the server keeps what holds that name.
    fn advice(&self, r: &FileReport) -> Option<String> {
        if self.verb != Verb::Send || r.status != Status::Code(Code::Exists) {
            return None;
        }
        let keeps = "the server keeps what it holds there: send it under another name";
        Some(match (r.kind, &r.path) {
            (EntryKind::Folder, _) => format!("{keeps} (--to PATH)"),
            (_, path) => {
                let option = if path.is_some() {
                    "--to PATH"
                } else {
                    "--name NAME"
                };
                format!(
                    "{keeps} ({option}), or ask the server's operator for ferry-server \
                     --overwrite replace or rename"
                )
            }
        })
    }

    /// How every file of the run ended, in one line: `3 files: 1 stored, 1 unchanged,
    /// 1 refused` (only the parts that are not zero), then the folders that were not made,
    /// if any (`(folders: 2 refused)`); a run of folders alone, how they ended (`2 folders:
    /// 1 made, 1 unchanged`).
    fn tally(&self, outcome: &Outcome) -> String {
        let (mut files, mut folders) = (Tally::default(), Tally::default());
        for r in &outcome.files {
            match r.kind {
                EntryKind::Folder => folders.add(r),
                _ => files.add(r),
            }
        }
        for s in &outcome.skipped {
            match s.kind {
                EntryKind::Folder => folders.skipped += 1,
                _ => files.skipped += 1,
            }
        }
        if files.total() == 0 && folders.total() > 0 {
            // Folders alone (empty ones): they are what the run did.
            return format!(
                "{}: {}",
                folders.count("folder"),
                folders.parts(Some("made"))
            );
        }
        let mut line = files.count("file");
        let parts = files.parts(Some(self.done()));
        if !parts.is_empty() {
            line += &format!(": {parts}");
        }
        let parts = folders.parts(None);
        if !parts.is_empty() {
            line += &format!(" (folders: {parts})");
        }
        if outcome.left_out > 0 {
            line += &format!(
                " (skipped: {} the server does not serve)",
                entries(outcome.left_out)
            );
        }
        line
    }

    fn line(&self, r: &FileReport) -> String {
        let size = HumanBytes(r.size.unwrap_or(r.bytes));
        let resumed = if r.offset > 0 {
            format!(", resumed at {}", HumanBytes(r.offset))
        } else {
            String::new()
        };
        let took = format!("{size} in {:.1} s{resumed}", r.seconds);
        // The line names the file: the detail need not again. The server names it raw or
        // escaped (as names are shown).
        let why = match after_name(&r.detail, &[r.name.as_str(), &r.name.to_string()]) {
            "" => r.status.as_str().replace('_', " "),
            why => printable(why),
        };
        let what = match r.kind {
            EntryKind::Folder => "folder ",
            _ => "",
        };
        match (r.status, self.verb) {
            // An upload's detail other than the name: the copy a rename policy made holds it
            // (§4.8). A download's says why the local file was kept.
            (Status::Code(Code::Unchanged), Verb::Send)
                if !r.detail.is_empty() && r.detail != r.name.as_str() =>
            {
                format!(
                    "unchanged {what}{} (held as {})",
                    r.name,
                    printable(&r.detail)
                )
            }
            (Status::Code(Code::Unchanged), _) => format!("unchanged {what}{}", r.name),
            (Status::NotSent, _) => format!("not sent {what}{}: {why}", r.name),
            (Status::Code(Code::Stored), _) if r.kind == EntryKind::Folder => {
                format!("made folder {}", r.name)
            }
            (Status::Code(Code::Stored), Verb::Get) => match &r.path {
                Some(p) => format!("saved {} to {} ({took})", r.name, p.display()),
                None => format!("wrote {} to standard output ({took})", r.name),
            },
            (Status::Code(Code::Stored), _) => {
                if r.detail.is_empty() || r.detail == r.name.as_str() {
                    format!("stored {} ({took})", r.name)
                } else {
                    format!("stored {} as {} ({took})", r.name, escape(&r.detail))
                }
            }
            (Status::Sent, _) => {
                format!("sent {} ({took}; the seed server confirms nothing)", r.name)
            }
            (_, Verb::Send | Verb::Legacy) if r.local => {
                format!("could not send {}: {why}", r.name)
            }
            (_, _) if r.refused => match self.advice(r) {
                Some(advice) => format!("server refused {what}{}: {why}; {advice}", r.name),
                None => format!("server refused {what}{}: {why}", r.name),
            },
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

/// Why a server leaves entries out of a listing (PROTOCOL.md §4.10): it does not say which
/// reason holds for which entry, only how many it left out.
pub(crate) const NOT_SERVED: &str = "the server does not serve them (symbolic links, special \
     files, unreadable folders, names the protocol cannot carry)";

/// How many entries of one kind (files, or folders) ended which way, for the closing line.
#[derive(Debug, Default)]
struct Tally {
    /// Stored (saved, sent).
    done: usize,
    unchanged: usize,
    refused: usize,
    /// Failed otherwise: here, on the way, or on the server after it took them.
    failed: usize,
    skipped: usize,
}

impl Tally {
    fn add(&mut self, r: &FileReport) {
        let part = match r.status {
            Status::Code(Code::Unchanged) => &mut self.unchanged,
            s if s.is_success() => &mut self.done,
            _ if r.refused => &mut self.refused,
            _ => &mut self.failed,
        };
        *part += 1;
    }

    /// How many in all.
    fn total(&self) -> usize {
        self.done + self.unchanged + self.refused + self.failed + self.skipped
    }

    /// `N {what}s` (or `1 {what}`).
    fn count(&self, what: &str) -> String {
        let n = self.total();
        let s = if n == 1 { "" } else { "s" };
        format!("{n} {what}{s}")
    }

    /// The parts that are not zero (`1 stored, 2 refused`); those that arrived or were there
    /// only when `done` names how they arrived.
    fn parts(&self, done: Option<&str>) -> String {
        let arrived = done.map(|word| [(self.done, word), (self.unchanged, "unchanged")]);
        let failed = [
            (self.refused, "refused"),
            (self.failed, "failed"),
            (self.skipped, "skipped"),
        ];
        arrived
            .into_iter()
            .flatten()
            .chain(failed)
            .filter(|(n, _)| *n > 0)
            .map(|(n, word)| format!("{n} {word}"))
            .collect::<Vec<_>>()
            .join(", ")
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
        // A folder made is not a file saved: its files confirm themselves.
        if let Some(i) = self
            .interrupt
            .as_ref()
            .filter(|_| report.status.is_success() && report.kind != EntryKind::Folder)
        {
            i.confirmed(&report.name);
        }
        if self.json {
            print_json(&report.to_json());
        }
        // Folders are told of only when they fail: their files say the rest.
        let show = !report.status.is_success()
            || !(self.json || self.quiet || report.kind == EntryKind::Folder);
        let line = show.then(|| self.line(report));
        if report.kind == EntryKind::Folder {
            if let Some(line) = line {
                self.progress.println(&line);
            }
        } else {
            self.progress.file_done(line.as_deref());
        }
    }

    fn skipped(&mut self, s: &Skipped) {
        if self.json {
            print_json(&s.to_json());
        }
        // Even with --quiet: a skip is a failure, which sets the exit code (1); the line says
        // what and why. Component by component: a Windows separator is shown as itself, not
        // escaped.
        let path = s
            .path
            .components()
            .map(|c| match c {
                Component::Normal(n) => escape(&n.to_string_lossy()).into(),
                other => other.as_os_str().to_owned(),
            })
            .collect::<PathBuf>()
            .display()
            .to_string();
        self.progress
            .println(&format!("ferry: skipped {path}: {}", s.reason));
    }

    fn left_out(&mut self, name: &Name, count: u64) {
        // Even with --quiet, as a skipped entry's line.
        self.progress.println(&format!(
            "ferry: skipped {} under {name}: {NOT_SERVED}",
            entries(count)
        ));
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

/// One entry of `ferry ls` for people: mode, size, mtime (UTC) and name, a folder's with `/`.
pub(crate) fn entry_line(e: &Entry) -> String {
    let folder = e.kind == EntryKind::Folder;
    let mut mode = String::from(if folder { "d" } else { "-" });
    for shift in [6, 3, 0] {
        let bits = (e.mode >> shift) & 7;
        for (bit, c) in [(4, 'r'), (2, 'w'), (1, 'x')] {
            mode.push(if bits & bit != 0 { c } else { '-' });
        }
    }
    let size = if folder {
        "-".to_owned()
    } else {
        e.size.to_string()
    };
    let slash = if folder { "/" } else { "" };
    format!(
        "{mode} {size:>12} {} {}{slash}",
        utc(e.mtime.secs),
        crate::shell::quote(&e.name)
    )
}

/// One entry of `ferry ls --json` (`"type": "entry"`).
pub(crate) fn entry_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "type": "entry",
        "kind": crate::report::kind_str(e.kind),
        "name": e.name.as_str(),
        "size": e.size,
        "mtime": e.mtime.secs,
        "mtime_nanos": e.mtime.nanos,
        "mode": e.mode,
    })
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS` in UTC (the civil calendar, proleptic).
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Words from the server or the system, safe to print: control and formatting characters
/// escaped as in names (PROTOCOL.md §5.3), backslashes kept (a Windows path's, or those of a
/// name the server escaped already).
fn printable(text: &str) -> String {
    text.split('\\').map(escape).collect::<Vec<_>>().join("\\")
}

/// Prints one JSON object on its own line on stdout.
pub(crate) fn print_json(v: &serde_json::Value) {
    crate::stdout::line(v);
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
    fn listings_show_mode_size_time_and_name() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_704_105_000), "2024-01-01 10:30:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(-1), "1969-12-31 23:59:59");
        let e = Entry {
            kind: EntryKind::Folder,
            name: Name::parse("photos/2024").unwrap(),
            size: 0,
            mtime: ferry_proto::Timestamp {
                secs: 1_704_105_000,
                nanos: 5,
            },
            mode: 0o750,
        };
        assert_eq!(
            entry_line(&e),
            "drwxr-x---            - 2024-01-01 10:30:00 photos/2024/"
        );
        assert_eq!(entry_json(&e)["kind"], "folder");
    }

    #[test]
    fn lines_say_what_happened_in_words() {
        let send = Console::new(Verb::Send, false, false, false, 1, Some(0));
        let mut refused = report(
            Status::Code(Code::Exists),
            true,
            "a file of that name exists (server policy: refuse)",
        );
        refused.path = Some("photo.jpg".into());
        assert_eq!(
            send.line(&refused),
            "server refused photo.jpg: a file of that name exists (server policy: refuse); the \
             server keeps what it holds there: send it under another name (--to PATH), or ask \
             the server's operator for ferry-server --overwrite replace or rename"
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
        let hostile = report(Status::Code(Code::Io), false, "full\u{1b}[2J at C:\\in");
        assert!(
            send.line(&hostile).ends_with(": full\\u{1b}[2J at C:\\in"),
            "control characters escaped, backslashes kept: {}",
            send.line(&hostile)
        );
        let get = Console::new(Verb::Get, false, false, false, 1, None);
        let cut = report(Status::Incomplete, false, "the connection ended first");
        assert_eq!(
            get.line(&cut),
            "incomplete photo.jpg: the connection ended first"
        );
    }

    #[test]
    fn the_closing_line_counts_every_file_once() {
        let mut folder = report(Status::Code(Code::Exists), true, "");
        folder.kind = EntryKind::Folder;
        let skipped = |kind| Skipped {
            path: "x".into(),
            name: "x".into(),
            kind,
            reason: String::new(),
        };
        let outcome = Outcome {
            files: vec![
                report(Status::Code(Code::Stored), false, ""),
                report(Status::Code(Code::Unchanged), false, ""),
                report(Status::Code(Code::Exists), true, ""),
                report(Status::Code(Code::NoSpace), false, ""),
                report(Status::Incomplete, false, ""),
                folder,
                FileReport::folder(Name::parse("d").unwrap(), None, Status::Code(Code::Stored)),
            ],
            skipped: vec![skipped(EntryKind::File), skipped(EntryKind::Folder)],
            ..Outcome::default()
        };
        let send = Console::new(Verb::Send, false, false, false, 5, None);
        assert_eq!(
            send.tally(&outcome),
            "6 files: 1 stored, 1 unchanged, 1 refused, 2 failed, 1 skipped \
             (folders: 1 refused, 1 skipped)"
        );
        let get = Console::new(Verb::Get, false, false, false, 1, None);
        let one = Outcome {
            files: vec![report(Status::Code(Code::Stored), false, "")],
            ..Outcome::default()
        };
        assert_eq!(get.tally(&one), "1 file: 1 saved");
        let folder = |status| FileReport::folder(Name::parse("e").unwrap(), None, status);
        let empty_folders = Outcome {
            files: vec![
                folder(Status::Code(Code::Stored)),
                folder(Status::Code(Code::Unchanged)),
            ],
            ..Outcome::default()
        };
        assert_eq!(send.tally(&empty_folders), "2 folders: 1 made, 1 unchanged");
    }
}
