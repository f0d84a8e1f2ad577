//! Progress bars on the terminal: one for the file moving now, one for the whole run, each
//! with rate and ETA. When disabled nothing is drawn at all.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use ferry_proto::Name;

const FILE_STYLE: &str =
    "{msg:30!} {bar:25.cyan/blue} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}";
const TOTAL_STYLE: &str =
    "{msg:30!} {bar:25.green/blue} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}";
const STREAM_STYLE: &str = "{msg:30!} {spinner} {bytes:>10} {bytes_per_sec:>12}";

/// The bars of one run.
pub(crate) struct Progress {
    multi: Option<MultiProgress>,
    total: ProgressBar,
    file: ProgressBar,
    done: usize,
    count: usize,
    /// The total was not known up front: each file's size is added as it starts.
    grow: bool,
    /// Bytes counted in the total since the last file started (taken back on a retry).
    current: u64,
}

impl Progress {
    /// Bars for `count` files of `bytes` bytes in all (`None`: learnt file by file); hidden
    /// unless `enabled`.
    pub(crate) fn new(enabled: bool, count: usize, bytes: Option<u64>) -> Self {
        let grow = bytes.is_none();
        if !enabled {
            return Self {
                multi: None,
                total: ProgressBar::hidden(),
                file: ProgressBar::hidden(),
                done: 0,
                count,
                grow,
                current: 0,
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let file = multi.add(ProgressBar::new(0).with_style(style(FILE_STYLE)));
        let total = multi.add(ProgressBar::new(bytes.unwrap_or(0)).with_style(style(TOTAL_STYLE)));
        let mut p = Self {
            multi: Some(multi),
            total,
            file,
            done: 0,
            count,
            grow,
            current: 0,
        };
        p.update_total_message();
        p
    }

    /// A file's body starts, `from` bytes in.
    pub(crate) fn start_file(&mut self, name: &Name, size: Option<u64>, from: u64) {
        if self.multi.is_none() {
            return;
        }
        self.file.reset();
        match size {
            Some(s) => {
                self.file.set_style(style(FILE_STYLE));
                self.file.set_length(s);
            }
            None => self.file.set_style(style(STREAM_STYLE)),
        }
        self.file.set_position(from);
        self.file.set_message(name.to_string());
        if self.grow {
            self.total.inc_length(size.unwrap_or(0));
        }
        // Resumed bytes are already there: count them in the total too.
        self.total.inc(from);
        self.current = from;
    }

    /// The connection failed and the transfer starts again: the bytes of the file that was
    /// moving are counted again when it resumes.
    pub(crate) fn rewind(&mut self) {
        let back = self.total.position().saturating_sub(self.current);
        self.total.set_position(back);
        self.current = 0;
        self.file.reset();
    }

    /// Prints a line above the bars (or to stderr without them).
    pub(crate) fn println(&self, line: &str) {
        match &self.multi {
            Some(m) if m.println(line).is_ok() => {}
            _ => eprintln!("{line}"),
        }
    }

    /// More bytes moved.
    pub(crate) fn advance(&mut self, n: u64) {
        self.current += n;
        self.file.inc(n);
        self.total.inc(n);
        if self
            .total
            .length()
            .is_some_and(|l| self.total.position() > l)
        {
            self.total.set_length(self.total.position());
        }
    }

    /// A file is over; `line` is printed above the bars (or to stderr without them).
    pub(crate) fn file_done(&mut self, line: Option<&str>) {
        self.done += 1;
        self.update_total_message();
        if let Some(line) = line {
            self.println(line);
        }
    }

    /// Removes the bars.
    pub(crate) fn finish(&self) {
        self.file.finish_and_clear();
        self.total.finish_and_clear();
    }

    fn update_total_message(&mut self) {
        self.total
            .set_message(format!("{} of {} files", self.done, self.count));
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}
