//! Progress bars on the terminal: one for the file moving now, one for the whole run, each
//! with rate and ETA. When disabled nothing is drawn at all.
//!
//! Every line fits the terminal's width (read again as each file starts, so a resized window
//! is followed): the label shows the end of a long name, where the file name is; the bar
//! takes what the label and the figures leave. A total that is not known (standard input)
//! gets no bar, only the bytes so far.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use ferry_proto::Name;

/// The width assumed when the terminal does not say.
const DEFAULT_WIDTH: usize = 80;
/// Columns of the figures after the bar: ` 1023.99 MiB/1023.99 MiB  999.99 MiB/s ETA 59m`
/// (a stream's ` ⠁ 1023.99 MiB  999.99 MiB/s` is shorter).
const FIGURES: usize = 46;
/// The figures without rate and ETA, when the others do not fit: ` 1023.99 MiB/1023.99 MiB`.
const SHORT_FIGURES: usize = 23;
/// Columns of the figures on a terminal too narrow for the others: ` 1023.99 MiB` or ` 42%`.
const COMPACT_FIGURES: usize = 11;
/// The label's bounds (it takes two fifths of the width in between).
const LABEL_MIN: usize = 8;
const LABEL_MAX: usize = 40;
/// A bar narrower than this is left out.
const BAR_MIN: usize = 5;
/// How often the spinner turns while a resumed file's prefix is verified.
const SPIN: Duration = Duration::from_millis(120);

/// The bars of one run.
pub(crate) struct Progress {
    multi: Option<MultiProgress>,
    total: ProgressBar,
    file: ProgressBar,
    done: usize,
    count: usize,
    /// The total was not known up front: no total bar, only bytes and rate.
    unknown_total: bool,
    /// Bytes counted in the total since the last file started (taken back on a retry).
    current: u64,
}

/// How much of the figures a line shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Figures {
    /// Bytes of total, rate, ETA.
    Full,
    /// Bytes of total.
    Short,
    /// A percentage, or the bytes so far.
    Compact,
}

impl Figures {
    /// This level's entry of `[full, short, compact]`.
    fn pick<T>(self, [full, short, compact]: [T; 3]) -> T {
        match self {
            Figures::Full => full,
            Figures::Short => short,
            Figures::Compact => compact,
        }
    }

    fn width(self) -> usize {
        self.pick([FIGURES, SHORT_FIGURES, COMPACT_FIGURES])
    }
}

/// Where each part of a line goes, for a terminal `width` columns wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    label: usize,
    /// 0: no bar.
    bar: usize,
    figures: Figures,
}

impl Layout {
    fn for_width(width: usize) -> Self {
        // One column spare: writing the last column makes some terminals wrap.
        let usable = width.saturating_sub(1);
        let label = (usable * 2 / 5).clamp(LABEL_MIN, LABEL_MAX);
        let figures = [Figures::Full, Figures::Short]
            .into_iter()
            .find(|f| label + f.width() <= usable)
            .unwrap_or(Figures::Compact);
        if figures == Figures::Compact {
            return Self {
                label: usable.saturating_sub(COMPACT_FIGURES).max(1),
                bar: 0,
                figures,
            };
        }
        let bar = usable - label - figures.width();
        Self {
            label,
            // The bar's own leading space counts too.
            bar: if bar > BAR_MIN { bar - 1 } else { 0 },
            figures,
        }
    }

    fn now() -> Self {
        Self::for_width(terminal_width())
    }

    /// A bar of known length: label, bar, bytes of total, rate, ETA.
    fn sized(&self, colour: &str) -> ProgressStyle {
        let bar = match self.bar {
            0 => String::new(),
            n => format!(" {{bar:{n}.{colour}/blue}}"),
        };
        let figures = self.figures.pick([
            " {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}",
            " {bytes:>10}/{total_bytes:<10}",
            " {percent:>3}%",
        ]);
        self.style(&format!("{bar}{figures}"))
    }

    /// No known length: label, spinner, bytes so far, rate.
    fn open_ended(&self) -> ProgressStyle {
        self.style(self.figures.pick([
            " {spinner} {bytes:>10} {bytes_per_sec:>12}",
            " {spinner} {bytes:>10}",
            " {bytes:>10}",
        ]))
    }

    /// A resumed file whose prefix, the bar's length, is being hashed.
    fn verifying(&self) -> ProgressStyle {
        self.style(self.figures.pick([
            " {spinner} verifying the {total_bytes} already on the server",
            " verifying",
            " verifying",
        ]))
    }

    /// The label, then `rest` (a template).
    fn style(&self, rest: &str) -> ProgressStyle {
        style(&format!("{{msg:{}}}{rest}", self.label))
    }

    /// `text` cut to the label's width, keeping its end (a path's file name).
    fn label(&self, text: &str) -> String {
        tail(text, self.label)
    }
}

impl Progress {
    /// Bars for `count` files of `bytes` bytes in all (`None`: not known up front); hidden
    /// unless `enabled`.
    pub(crate) fn new(enabled: bool, count: usize, bytes: Option<u64>) -> Self {
        let mut p = Self {
            multi: None,
            total: ProgressBar::hidden(),
            file: ProgressBar::hidden(),
            done: 0,
            count,
            unknown_total: bytes.is_none(),
            current: 0,
        };
        if !enabled {
            return p;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        // Set up hidden, then shown: no frame is drawn half set up. The file's bar joins
        // when the first file starts.
        if let Some(b) = bytes {
            p.total.set_length(b);
        }
        p.restyle_total(Layout::now());
        p.update_total_message();
        p.total = multi.add(p.total);
        p.multi = Some(multi);
        p
    }

    /// A resumed file's first `bytes`, which the server holds, are being hashed to check that
    /// they are the same here.
    pub(crate) fn verifying(&mut self, name: &Name, bytes: u64) {
        let layout = Layout::now();
        let bar = ProgressBar::hidden()
            .with_style(layout.verifying())
            .with_message(layout.label(name.as_str()));
        bar.set_length(bytes);
        if self.replace_file_bar(bar) {
            self.file.enable_steady_tick(SPIN);
        }
    }

    /// A file's body starts, `from` bytes in.
    pub(crate) fn start_file(&mut self, name: &Name, size: Option<u64>, from: u64) {
        // Hidden bars (`-q`, `--json`, no terminal): no layout to ask the terminal for and no
        // style to parse, per file.
        if self.multi.is_none() {
            return;
        }
        let layout = Layout::now();
        let bar = ProgressBar::hidden().with_message(layout.label(name.as_str()));
        match size {
            Some(s) => {
                bar.set_style(layout.sized("cyan"));
                bar.set_length(s);
                bar.set_position(from);
            }
            None => bar.set_style(layout.open_ended()),
        }
        if !self.replace_file_bar(bar) {
            return;
        }
        self.restyle_total(layout);
        // Resumed bytes are already there: count them in the total too.
        self.total.inc(from);
        self.current = from;
        self.finish_if_complete();
    }

    /// Puts `bar`, fully set up, in the place of the file's bar (one drawing, no half-updated
    /// frames); `false` when the bars are hidden.
    fn replace_file_bar(&mut self, bar: ProgressBar) -> bool {
        let Some(multi) = &self.multi else {
            return false;
        };
        let old = std::mem::replace(&mut self.file, multi.insert_before(&self.total, bar));
        old.disable_steady_tick();
        old.finish_and_clear();
        multi.remove(&old);
        self.file.force_draw();
        true
    }

    /// The connection failed and the transfer starts again: the bytes of the file that was
    /// moving are counted again when it resumes.
    pub(crate) fn rewind(&mut self) {
        let back = self.total.position().saturating_sub(self.current);
        self.total.set_position(back);
        self.current = 0;
        self.file.disable_steady_tick();
        self.file.finish_and_clear();
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
        // Hidden bars: nothing to count (a bar's count reads the clock, per file).
        if self.multi.is_none() {
            return;
        }
        self.file.inc(n);
        self.total.inc(n);
        if self
            .total
            .length()
            .is_some_and(|l| self.total.position() > l)
        {
            self.total.set_length(self.total.position());
        }
        self.finish_if_complete();
    }

    /// A file is over; `line` is printed above the bars (or to stderr without them).
    pub(crate) fn file_done(&mut self, line: Option<&str>) {
        self.done += 1;
        if self.multi.is_some() {
            self.update_total_message();
        }
        if let Some(line) = line {
            self.println(line);
        }
    }

    /// Removes the bars.
    pub(crate) fn finish(&self) {
        self.file.disable_steady_tick();
        self.file.finish_and_clear();
        self.total.finish_and_clear();
    }

    /// A handle to the bars, to clear them from another thread (on Ctrl-C).
    pub(crate) fn bars(&self) -> Option<MultiProgress> {
        self.multi.clone()
    }

    /// A file whose bytes have all moved is drawn complete at once, with its real rate,
    /// rather than left at whatever the last (rate-limited) drawing showed.
    fn finish_if_complete(&self) {
        if self
            .file
            .length()
            .is_some_and(|l| self.file.position() >= l)
        {
            self.file.finish();
        }
    }

    fn restyle_total(&mut self, layout: Layout) {
        let style = if self.unknown_total {
            layout.open_ended()
        } else {
            layout.sized("green")
        };
        self.total.set_style(style);
        if self.unknown_total {
            self.total.unset_length();
        }
    }

    fn update_total_message(&mut self) {
        self.total
            .set_message(format!("{} of {} files", self.done, self.count));
    }
}

/// The terminal's width in columns (stderr's), or [`DEFAULT_WIDTH`] if it does not say.
#[cfg(unix)]
fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stderr())
        .ok()
        .map(|w| usize::from(w.ws_col))
        .filter(|&c| c > 0)
        .unwrap_or(DEFAULT_WIDTH)
}

/// The console's width in columns (stderr's), or [`DEFAULT_WIDTH`] if it does not say.
#[cfg(windows)]
fn terminal_width() -> usize {
    console::Term::stderr()
        .size_checked()
        .map(|(_, cols)| usize::from(cols))
        .filter(|&c| c > 0)
        .unwrap_or(DEFAULT_WIDTH)
}

/// The last `width` characters of `text`, led by `…` when cut.
fn tail(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_owned();
    }
    let keep = width.saturating_sub(1);
    let rest: String = text.chars().skip(count - keep).collect();
    format!("…{rest}")
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_labels_keep_their_end() {
        assert_eq!(tail("photos/2024/cat.jpg", 40), "photos/2024/cat.jpg");
        assert_eq!(tail("photos/2024/cat.jpg", 9), "…/cat.jpg");
        assert_eq!(tail("ééééé", 3), "…éé");
    }

    #[test]
    fn lines_fit_the_width() {
        for width in [10, 20, 40, 56, 60, 80, 100, 200, 400] {
            let l = Layout::for_width(width);
            let bar = if l.bar > 0 { l.bar + 1 } else { 0 };
            let used = l.label + bar + l.figures.width();
            assert!(used < width.max(COMPACT_FIGURES + 2), "{width}: {l:?}");
            assert!(l.label <= LABEL_MAX, "{width}: {l:?}");
        }
        assert_eq!(Layout::for_width(20).figures, Figures::Compact);
        assert_eq!(Layout::for_width(60).figures, Figures::Short);
        assert!(Layout::for_width(60).bar > 0);
        assert_eq!(Layout::for_width(120).figures, Figures::Full);
        assert!(Layout::for_width(120).bar > 20);
    }
}
