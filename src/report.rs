//! The CLI's reporters: progress bars on a TTY, silence otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// `s` made safe for a terminal (`davit_rootfs::text::printable`, newlines
/// and tabs kept). For text an image or a server controls: a
/// create-message, an error quoting an archive entry.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    davit_rootfs::text::printable(s, true)
}

/// Prints steps and bars to stderr when it is a terminal; warnings always
/// (unless quiet); nothing else.
pub struct Term {
    tty: bool,
    quiet: bool,
    multi: MultiProgress,
    bars: Mutex<HashMap<u64, ProgressBar>>,
    next: AtomicU64,
}

impl Term {
    /// `quiet` hides warnings too; `json` keeps bars and steps off stderr.
    pub fn new(quiet: bool, json: bool) -> Term {
        let tty = std::io::stderr().is_terminal() && !quiet && !json;
        let multi = MultiProgress::with_draw_target(if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Term {
            tty,
            quiet,
            multi,
            bars: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    fn begin(&self, what: &str, len: Option<u64>) -> u64 {
        // Small files finish before a bar could say anything useful.
        if !self.tty || len.is_some_and(|n| n < 256 * 1024) {
            return 0;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let bar = match len {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(
                    "{msg:>16} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("template")
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{msg:>16} {spinner} {bytes} {bytes_per_sec}")
                    .expect("template"),
            ),
        };
        let bar = self.multi.add(bar);
        bar.set_message(what.to_string());
        self.bars.lock().expect("lock").insert(id, bar);
        id
    }

    fn inc(&self, id: u64, n: u64) {
        if let Some(b) = self.bars.lock().expect("lock").get(&id) {
            b.inc(n);
        }
    }

    fn end(&self, id: u64) {
        if let Some(b) = self.bars.lock().expect("lock").remove(&id) {
            b.finish_and_clear();
        }
    }

    /// A line for the user on a TTY.
    pub fn say(&self, what: &str) {
        if self.tty {
            let _ = self.multi.println(printable(what));
        }
    }

    /// A warning: shown unless `--quiet`.
    pub fn warning(&self, what: &str) {
        if !self.quiet {
            self.multi
                .suspend(|| eprintln!("warning: {}", printable(what)));
        }
    }
}

/// The one reporter trait every library reports through (davit-types).
impl davit_types::Reporter for Term {
    fn start(&self, what: &str, len: Option<u64>) -> u64 {
        self.begin(what, len)
    }
    fn advance(&self, id: u64, bytes: u64) {
        self.inc(id, bytes)
    }
    fn finish(&self, id: u64) {
        self.end(id)
    }
    fn step(&self, what: &str) {
        self.say(what)
    }
    fn warn(&self, what: &str) {
        self.warning(what)
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escapes_and_invisible_characters_are_shown_not_obeyed() {
        assert_eq!(printable("plain\ttext\nline"), "plain\ttext\nline");
        assert_eq!(
            printable("\u{1b}]0;pwned\u{7}\u{1b}[2J"),
            "\\x1b]0;pwned\\x07\\x1b[2J"
        );
        assert_eq!(printable("a\u{202e}b\u{9b}c\r"), "a\\u{202e}b\\x9bc\\x0d");
    }
}
