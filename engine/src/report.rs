//! How a run talks to the user: one [`Report`] trait, three implementations.
//!
//! The scheduler calls a `Report` and prints nothing itself (like n2 keeps `progress.rs` apart
//! from `work.rs`): [`TextReport`] prints `STARTED|SUCCESS|ERROR|…` lines on stdout with
//! indicatif bars (or plain progress lines) on stderr, [`JsonReport`] prints one JSON document
//! at the end with plain progress lines on stderr, [`SilentReport`] prints nothing.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::progress::{Progress, ProgressHub};
use crate::run::{Reporter, RunSummary, Status, TaskResult};

/// Receives the events of a run. Called from worker threads.
pub trait Report: Send + Sync {
    /// A task's action is about to run.
    fn task_started(&self, task: &str);
    /// A task finished (ran, skipped, failed, blocked, or judged by a dry run).
    fn task_finished(&self, result: &TaskResult, dry_run: bool);
    /// A progress indicator for long work inside a running task.
    fn progress(&self, task: &str, total: Option<u64>, message: &str) -> Progress;
    /// A human-readable note from a running task.
    fn note(&self, task: &str, message: &str);
    /// The run is over (bars are cleared; a JSON report prints its document).
    fn run_finished(&self, summary: &RunSummary);
}

/// The report for a [`Reporter`] choice (`progress_bars`: draw bars when on a terminal).
pub fn for_kind(kind: Reporter, progress_bars: bool) -> Arc<dyn Report> {
    match kind {
        Reporter::Text => Arc::new(TextReport::new(ProgressHub::new(!progress_bars))),
        Reporter::Json => Arc::new(JsonReport {
            hub: ProgressHub::new(true),
        }),
        Reporter::Silent => Arc::new(SilentReport),
    }
}

/// Nothing printed (library use, tests, `info`, `clean`).
pub struct SilentReport;

impl Report for SilentReport {
    fn task_started(&self, _: &str) {}
    fn task_finished(&self, _: &TaskResult, _: bool) {}
    fn progress(&self, task: &str, total: Option<u64>, message: &str) -> Progress {
        ProgressHub::quiet().start(task, total, message)
    }
    fn note(&self, _: &str, _: &str) {}
    fn run_finished(&self, _: &RunSummary) {}
}

/// Task lines on stdout, progress (bars on a terminal) and errors on stderr.
pub struct TextReport {
    hub: ProgressHub,
    /// Serialises the lines of the worker threads.
    line: Mutex<()>,
}

impl TextReport {
    /// Prints through `hub` (bars are cleared around every line).
    pub fn new(hub: ProgressHub) -> Self {
        TextReport {
            hub,
            line: Mutex::new(()),
        }
    }

    fn line(&self, text: &str) {
        let _guard = self.line.lock();
        self.hub.suspend(|| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        });
    }
}

/// The line of a finished task: `SUCCESS t [1.00s]`, `SKIPPED t`, `BLOCKED t`; in a dry run
/// `WOULD-RUN t (reasons)` or `UP-TO-DATE t` (a dry run never says SUCCESS).
pub fn result_line(r: &TaskResult, dry_run: bool) -> String {
    match r.status {
        Status::WouldRun => {
            let reasons: Vec<String> = r.reasons.iter().map(ToString::to_string).collect();
            format!("WOULD-RUN {} ({})", r.name, reasons.join("; "))
        }
        Status::Skipped if dry_run => format!("UP-TO-DATE {}", r.name),
        Status::Cached => format!(
            "{:<8} {} [{:.2}s] (from remote cache)",
            r.status.label(),
            r.name,
            r.duration_s
        ),
        Status::Success | Status::Error => {
            format!("{:<8} {} [{:.2}s]", r.status.label(), r.name, r.duration_s)
        }
        _ => format!("{:<8} {}", r.status.label(), r.name),
    }
}

impl Report for TextReport {
    fn task_started(&self, task: &str) {
        self.line(&format!("{:<8} {task}", "STARTED"));
    }
    fn task_finished(&self, result: &TaskResult, dry_run: bool) {
        self.line(&result_line(result, dry_run));
        if let Some(err) = &result.error {
            self.hub
                .suspend(|| eprintln!("ERROR in {}:\n{err}", result.name));
        }
    }
    fn progress(&self, task: &str, total: Option<u64>, message: &str) -> Progress {
        self.hub.start(task, total, message)
    }
    fn note(&self, task: &str, message: &str) {
        self.hub.note(task, message);
    }
    fn run_finished(&self, _: &RunSummary) {
        self.hub.clear();
    }
}

/// One JSON document (the [`RunSummary`]) on stdout at the end; progress and notes as plain
/// lines on stderr.
pub struct JsonReport {
    hub: ProgressHub,
}

impl Report for JsonReport {
    fn task_started(&self, _: &str) {}
    fn task_finished(&self, _: &TaskResult, _: bool) {}
    fn progress(&self, task: &str, total: Option<u64>, message: &str) -> Progress {
        self.hub.start(task, total, message)
    }
    fn note(&self, task: &str, message: &str) {
        self.hub.note(task, message);
    }
    fn run_finished(&self, summary: &RunSummary) {
        if let Ok(text) = serde_json::to_string_pretty(summary) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }
}
