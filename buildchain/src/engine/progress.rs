//! Progress reporting: indicatif bars on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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
    /// Starts a progress indicator.
    pub fn start(&self, task: &str, total: Option<u64>, message: &str) -> Progress {
        let bar = self.multi.as_ref().map(|m| {
            let pb = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            let style = if total.is_some() {
                ProgressStyle::with_template(
                    "{prefix:.bold} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
            } else {
                ProgressStyle::with_template("{prefix:.bold} {msg} {spinner} {bytes} {binary_bytes_per_sec}")
            };
            pb.set_style(style.unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> "));
            pb.set_prefix(task.to_string());
            pb.set_message(message.to_string());
            m.add(pb)
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
        match &self.multi {
            Some(m) => {
                let _ = m.println(format!("{task}: {message}"));
            }
            None => eprintln!("{task}: {message}"),
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
    /// Grows the expected total (when it is discovered as work proceeds).
    pub fn add_total(&self, n: u64) {
        let Ok(mut s) = self.inner.lock() else { return };
        s.total = Some(s.total.unwrap_or(0) + n);
        if let Some(b) = &s.bar {
            b.inc_length(n);
        }
    }
    /// Ends the indicator.
    pub fn finish(&self) {
        let Ok(s) = self.inner.lock() else { return };
        if let Some(b) = &s.bar {
            b.finish_and_clear();
        }
    }
}
