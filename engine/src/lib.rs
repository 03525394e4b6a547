//! The generic build-graph engine of buildchain (crate `buildchain-engine`).
//!
//! It depends on no other workspace crate: it knows tasks, files and values, never ISOs,
//! images or packages. [`fs`] holds the atomic-file helpers every task uses (re-exported by
//! `buildchain::fsutil`), [`testhook`] the crash points of the fault tests.
//!
//! A [`Graph`] of [`Task`]s with declared inputs (files, trees, values), outputs and
//! dependencies. A task is up to date when the signature of its inputs and the state of its
//! outputs match the last successful run recorded in the state DB under the build root.

mod buildlog;
pub mod cache;
pub mod decide;
pub mod dirty;
pub mod fs;
mod lock;
pub mod progress;
pub mod prune;
pub mod report;
pub mod run;
pub mod scheduler;
pub mod select;
pub mod signature;
pub mod state;
pub mod task;
pub mod testhook;
pub mod verbs;

use std::collections::BTreeMap;

use anyhow::{bail, Result};

pub use cache::ResultCache;
pub use dirty::{DirtyReason, InputKey};
pub use progress::{Progress, ProgressHub};
pub use report::Report;
pub use run::{run, Engine, Reporter, RunOptions, RunSummary, Status, TaskResult};
pub use select::expand;
pub use task::{Action, Input, Task, TaskContext};

/// An error and its causes on one line (`a: b: c`), like `{e:#}` but without repeating a cause
/// whose text the previous message already ends with (an I/O error formatted into its context
/// and also chained as its source would otherwise be printed twice).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// The set of tasks of a build.
#[derive(Default, Debug, Clone)]
pub struct Graph {
    tasks: BTreeMap<String, Task>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a task; a duplicate name is an error.
    pub fn add(&mut self, task: Task) -> Result<()> {
        if self.tasks.contains_key(&task.name) {
            bail!("task {:?} defined twice", task.name);
        }
        self.tasks.insert(task.name.clone(), task);
        Ok(())
    }
    /// Adds several tasks.
    pub fn extend(&mut self, tasks: impl IntoIterator<Item = Task>) -> Result<()> {
        for t in tasks {
            self.add(t)?;
        }
        Ok(())
    }
    /// Looks a task up.
    pub fn get(&self, name: &str) -> Option<&Task> {
        self.tasks.get(name)
    }
    /// Every task, sorted by name.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }
}
