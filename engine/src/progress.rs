//! Progress reporting: indicatif bars on a terminal, plain lines otherwise.
//!
//! On a terminal, every line printed during a run (task lines, notes, errors) goes through
//! [`ProgressHub::suspend`] or [`ProgressHub::note`], so bars are cleared before the line and
//! redrawn below it; a finished (or dropped) indicator is cleared, never left frozen.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

const BAR_TEMPLATE: &str =
    "{prefix:.bold} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";
const SPINNER_TEMPLATE: &str = "{prefix:.bold} {msg} {spinner} {elapsed}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Shared by every task of a run; decides between bars and plain lines.
#[derive(Clone)]
pub struct ProgressHub {
    multi: Option<MultiProgress>,
    quiet: bool,
}

impl ProgressHub {
    /// Bars when `stderr` is a terminal and `plain` is false.
    pub fn new(plain: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let multi =
            (tty && !plain).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        ProgressHub {
            multi,
            quiet: false,
        }
    }
    /// No output at all (tests, JSON reporter to stdout).
    pub fn quiet() -> Self {
        ProgressHub {
            multi: None,
            quiet: true,
        }
    }
    /// Starts a progress indicator: a byte bar when `total` is known, else a spinner that
    /// becomes a bar when [`Progress::add_total`] gives it a size (nothing like `0 B/0 B`).
    pub fn start(&self, task: &str, total: Option<u64>, message: &str) -> Progress {
        let bar = self.multi.as_ref().map(|m| {
            // Hidden until added: a bar drawn straight to stderr before it joins the
            // MultiProgress is not tracked by it and stays frozen on the screen.
            let pb = m.add(ProgressBar::with_draw_target(
                total,
                ProgressDrawTarget::hidden(),
            ));
            pb.set_style(style(if total.is_some() {
                BAR_TEMPLATE
            } else {
                SPINNER_TEMPLATE
            }));
            pb.set_prefix(task.to_string());
            pb.set_message(message.to_string());
            if total.is_none() {
                pb.enable_steady_tick(Duration::from_millis(200));
            }
            pb
        });
        Progress {
            inner: Arc::new(Mutex::new(ProgressState {
                bar,
                task: task.to_string(),
                message: message.to_string(),
                total,
                done: 0,
                started: Instant::now(),
                last_line: Instant::now(),
                quiet: self.quiet || self.multi.is_some(),
            })),
        }
    }
    /// Prints a note line (above bars when bars are drawn).
    pub fn note(&self, task: &str, message: &str) {
        if self.quiet {
            return;
        }
        self.suspend(|| eprintln!("{task}: {message}"));
    }
    /// Runs `f` (which prints) with the bars cleared, then redraws them below its output.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.multi {
            Some(m) => m.suspend(f),
            None => f(),
        }
    }
    /// Clears whatever is still drawn (end of a run).
    pub fn clear(&self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

struct ProgressState {
    bar: Option<ProgressBar>,
    task: String,
    message: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
    quiet: bool,
}

impl Drop for ProgressState {
    /// An indicator dropped unfinished (an error path) is cleared too, not left frozen.
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            if !b.is_finished() {
                b.finish_and_clear();
            }
        }
    }
}

/// A running progress indicator; cheap to clone and share between threads.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Mutex<ProgressState>>,
}

impl Progress {
    /// Adds `n` bytes of work done.
    pub fn inc(&self, n: u64) {
        let Ok(mut s) = self.inner.lock() else { return };
        s.done += n;
        if let Some(b) = &s.bar {
            b.inc(n);
        } else if !s.quiet && s.last_line.elapsed() >= Duration::from_secs(5) {
            s.last_line = Instant::now();
            let rate = s.done as f64 / s.started.elapsed().as_secs_f64().max(1e-3) / 1e6;
            match s.total {
                Some(t) => eprintln!(
                    "{}: {} {}/{} bytes ({rate:.1} MB/s)",
                    s.task, s.message, s.done, t
                ),
                None => eprintln!(
                    "{}: {} {} bytes ({rate:.1} MB/s)",
                    s.task, s.message, s.done
                ),
            }
        }
    }
    /// Grows the expected total (when it is discovered as work proceeds); a spinner becomes a
    /// byte bar.
    pub fn add_total(&self, n: u64) {
        let Ok(mut s) = self.inner.lock() else { return };
        let was_known = s.total.is_some();
        if n == 0 && !was_known {
            return;
        }
        s.total = Some(s.total.unwrap_or(0) + n);
        if let Some(b) = &s.bar {
            if was_known {
                b.inc_length(n);
            } else {
                b.disable_steady_tick();
                b.set_length(n);
                b.set_style(style(BAR_TEMPLATE));
            }
        }
    }
    /// The expected total so far (`None` until known).
    pub fn total(&self) -> Option<u64> {
        self.inner.lock().ok().and_then(|s| s.total)
    }
    /// Work done so far.
    pub fn done(&self) -> u64 {
        self.inner.lock().map(|s| s.done).unwrap_or(0)
    }
    /// Ends the indicator (its bar is cleared).
    pub fn finish(&self) {
        let Ok(s) = self.inner.lock() else { return };
        if let Some(b) = &s.bar {
            b.finish_and_clear();
        }
    }
}
