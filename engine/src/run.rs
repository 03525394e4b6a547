//! One engine session: opens the state DB under the build lock, runs one task and records its
//! success. Whether a task must run is decided in [`crate::decide`], stale outputs are removed in
//! [`crate::prune`], the order of tasks is the [`crate::scheduler`]'s, and what the user sees goes
//! through a [`crate::report::Report`].

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use serde::Serialize;

use super::cache::{task_key, ResultCache};
use super::dirty::DirtyReason;
use super::report::{Report, SilentReport};
use super::signature::{rel, HashCache};
use super::state::{State, StateDb, TaskRecord};
use super::task::{Task, TaskContext};
use super::Graph;

pub use super::scheduler::run;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reporter {
    /// `STARTED|SUCCESS|ERROR|SKIPPED <task> [<secs>s]` lines on stdout.
    Text,
    /// One JSON document on stdout at the end; progress as plain lines on stderr.
    Json,
    /// Nothing printed (library use, tests).
    Silent,
}

/// Options of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Worker threads (≥ 1).
    pub jobs: usize,
    /// Only say what would run and why.
    pub dry_run: bool,
    /// Output style.
    pub reporter: Reporter,
    /// Holds the state DB, the lock, the scratch dir and `build.log`.
    pub build_root: PathBuf,
    /// Paths are shown relative to this (the repository root).
    pub display_root: PathBuf,
    /// Outputs are only ever deleted (pruned, cleaned) under these directories.
    pub prune_roots: Vec<PathBuf>,
    /// Draw progress bars when on a terminal.
    pub progress_bars: bool,
    /// Asked before running a cacheable task, told after (see [`crate::cache`]).
    pub result_cache: Option<Arc<dyn ResultCache>>,
    /// Part of every result-cache key (a new tool version never reuses old results).
    pub tool_version: String,
}

impl RunOptions {
    /// Defaults for a build root: CPUs workers, text reporter, prune under the build root.
    pub fn new(build_root: &Path, display_root: &Path) -> Self {
        RunOptions {
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            dry_run: false,
            reporter: Reporter::Text,
            build_root: build_root.to_path_buf(),
            display_root: display_root.to_path_buf(),
            prune_roots: vec![build_root.to_path_buf()],
            progress_bars: true,
            result_cache: None,
            tool_version: String::new(),
        }
    }
}

/// Outcome of one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Ran and succeeded.
    Success,
    /// Up to date.
    Skipped,
    /// Ran and failed.
    Error,
    /// Not run because a dependency failed.
    Blocked,
    /// Dry run: would run.
    WouldRun,
    /// Outputs restored from the result cache instead of running the action.
    Cached,
}

impl Status {
    /// Upper-case label of the task lines (`SUCCESS`, `WOULD-RUN`, …).
    pub fn label(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::Skipped => "SKIPPED",
            Status::Error => "ERROR",
            Status::Blocked => "BLOCKED",
            Status::WouldRun => "WOULD-RUN",
            Status::Cached => "CACHED",
        }
    }
}

/// One line of the report / build log.
#[derive(Clone, Debug, Serialize)]
pub struct TaskResult {
    /// Task name.
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// Seconds spent in the action (0 when skipped).
    pub duration_s: f64,
    /// Why it ran (or would run).
    pub reasons: Vec<DirtyReason>,
    /// Full error text for failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// Per task, in completion order.
    pub tasks: Vec<TaskResult>,
    /// No task failed.
    pub ok: bool,
    /// Wall time, seconds.
    pub duration_s: f64,
    /// Outputs removed because no task produces them any more.
    pub pruned: Vec<String>,
}

/// Shared machinery of a run, `info` and `clean`.
pub struct Engine<'g> {
    /// The graph.
    pub graph: &'g Graph,
    pub(crate) opts: RunOptions,
    pub(crate) state: Mutex<State>,
    pub(crate) cache: std::sync::Arc<HashCache>,
    pub(crate) db: Mutex<StateDb>,
    /// Where the run's events go (the scheduler prints nothing itself).
    pub(crate) report: Arc<dyn Report>,
    /// Dry run: `(path, task)` for every output of a task judged would-run so far; a later task
    /// whose inputs cover one of these paths would run too.
    pub(crate) would_change: Mutex<Vec<(PathBuf, String)>>,
    pub(crate) _lock: Option<std::fs::File>,
}

impl<'g> Engine<'g> {
    /// Opens the state DB of `opts.build_root` and takes the build lock.
    pub fn open(graph: &'g Graph, opts: RunOptions) -> Result<Self> {
        let lock = super::lock::lock_build_root(&opts.build_root)?;
        // Debris of a killed run: temp files never renamed into place.
        for root in &opts.prune_roots {
            crate::fs::sweep_temp_files(root);
        }
        let db = StateDb::new(&opts.build_root);
        let state = db.load();
        let cache = std::sync::Arc::new(HashCache::new(state.files.clone()));
        cache.enable_memo();
        Ok(Engine {
            graph,
            opts,
            state: Mutex::new(state),
            cache,
            db: Mutex::new(db),
            report: Arc::new(SilentReport),
            would_change: Mutex::new(Vec::new()),
            _lock: Some(lock),
        })
    }
}

impl Engine<'_> {
    /// Drops the tree listings a finished task may have changed: its declared and added
    /// outputs, its owned directories, and what it recorded last time (see
    /// [`HashCache::forget_walks`]). A task that declares nothing it writes (it may still
    /// remove a stale file) drops every listing.
    fn forget_walks_of(&self, task: &Task, added: &[PathBuf]) {
        let old: Vec<PathBuf> = self
            .record(&task.name)
            .map(|r| r.outputs.into_keys().collect())
            .unwrap_or_default();
        if task.outputs.is_empty() && task.owned_dirs.is_empty() && added.is_empty() {
            self.cache.forget_all_walks();
            return;
        }
        let paths = task
            .outputs
            .iter()
            .chain(&task.owned_dirs)
            .chain(added)
            .chain(&old);
        self.cache.forget_walks(paths.map(PathBuf::as_path));
    }

    pub(crate) fn record(&self, name: &str) -> Option<TaskRecord> {
        self.state.lock().ok()?.tasks.get(name).cloned()
    }

    pub(crate) fn commit_record(&self, name: &str, record: Option<TaskRecord>) -> Result<()> {
        if let Ok(mut s) = self.state.lock() {
            match &record {
                Some(r) => {
                    s.tasks.insert(name.to_string(), r.clone());
                }
                None => {
                    s.tasks.remove(name);
                }
            }
        }
        let touched = self.cache.take_touched();
        self.db
            .lock()
            .map_err(|_| anyhow!("state DB lock poisoned"))?
            .append(name, record.as_ref(), touched)
    }

    /// Writes the snapshot (state + content cache); nothing to do after a no-op run.
    pub fn save(&self) -> Result<()> {
        self.cache.settle()?;
        let pending = self.db.lock().map(|d| d.has_pending()).unwrap_or(true);
        if !pending && !self.cache.has_touched() {
            return Ok(());
        }
        let mut state = self
            .state
            .lock()
            .map_err(|_| anyhow!("state lock poisoned"))?
            .clone();
        state.files = self.cache.snapshot();
        // Forget cache entries for files that no longer exist.
        state
            .files
            .retain(|p, _| std::fs::symlink_metadata(p).is_ok());
        self.db
            .lock()
            .map_err(|_| anyhow!("state DB lock poisoned"))?
            .save(&state)
    }

    /// Runs (or, in a dry run, judges) one task. `ran_deps` are the dependencies that ran (or
    /// would run): in a dry run their outputs are about to change, so the task would run too.
    pub(crate) fn run_one(&self, task: &Task, ran_deps: &[String]) -> TaskResult {
        let started = Instant::now();
        let mut result = TaskResult {
            name: task.name.clone(),
            status: Status::Skipped,
            duration_s: 0.0,
            reasons: Vec::new(),
            error: None,
        };
        let dep_reasons: Vec<DirtyReason> = if self.opts.dry_run {
            ran_deps
                .iter()
                .map(|d| DirtyReason::DependencyWouldRun(d.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let Some(action) = task.action.clone() else {
            result.status = match (ran_deps.is_empty(), self.opts.dry_run) {
                (true, _) => Status::Skipped,
                (false, true) => Status::WouldRun,
                (false, false) => Status::Success,
            };
            result.reasons = dep_reasons;
            return result;
        };
        let decision = match self.decide(task) {
            Ok(d) => d,
            Err(e) => {
                result.status = Status::Error;
                result.error = Some(format!(
                    "cannot compute the inputs of {}: {}",
                    task.name,
                    super::error_text(&e)
                ));
                return result;
            }
        };
        if self.opts.dry_run {
            // Own reasons first, then the inputs that a would-run task before it rewrites (a
            // dependency that runs changes a dependent only through the files it writes).
            let mut reasons = decision.reasons;
            reasons.extend(self.inputs_rewritten(task));
            if !reasons.is_empty() {
                result.status = Status::WouldRun;
                result.reasons = reasons;
                self.note_would_change(task);
            }
            return result;
        }
        if decision.reasons.is_empty() {
            return result;
        }
        result.reasons = decision.reasons;
        self.cache.disable_memo();
        self.report.task_started(&task.name);
        let key = match &self.opts.result_cache {
            Some(_) if task.cacheable => Some(task_key(
                &self.opts.tool_version,
                &decision.inputs,
                &self.opts.build_root,
                &self.opts.display_root,
            )),
            _ => None,
        };
        if let (Some(rc), Some(key)) = (&self.opts.result_cache, &key) {
            if self.restore_cached(rc.as_ref(), task, key, &decision.inputs, started) {
                result.status = Status::Cached;
                result.duration_s = started.elapsed().as_secs_f64();
                return result;
            }
        }
        let mut ctx = TaskContext {
            name: task.name.clone(),
            extra_outputs: Vec::new(),
            known_digests: Vec::new(),
            report: self.report.clone(),
            cache: self.cache.clone(),
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| action.run(&mut ctx)))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(anyhow!("task panicked: {msg}"))
            })
            .and_then(|()| {
                self.forget_walks_of(task, &ctx.extra_outputs);
                self.finish_success(task, ctx, decision.inputs, started, false)
            });
        result.duration_s = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                result.status = Status::Success;
                if let (Some(rc), Some(key)) = (&self.opts.result_cache, &key) {
                    self.record_cached(rc.as_ref(), task, key);
                }
            }
            Err(e) => {
                // A failed action may have written (or removed) anything it owns.
                self.forget_walks_of(task, &[]);
                result.status = Status::Error;
                result.error = Some(super::error_text(&e));
                let _ = self.commit_record(&task.name, None);
            }
        }
        result
    }

    pub(crate) fn finish_success(
        &self,
        task: &Task,
        ctx: TaskContext,
        inputs: BTreeMap<String, String>,
        started: Instant,
        from_cache: bool,
    ) -> Result<()> {
        for (p, d) in &ctx.known_digests {
            self.cache.remember(p, d);
        }
        let mut outputs: Vec<PathBuf> = task.outputs.clone();
        outputs.extend(ctx.extra_outputs);
        outputs.sort();
        outputs.dedup();
        let sigs: Vec<(PathBuf, String)> = outputs
            .par_iter()
            .map(|p| Ok((p.clone(), self.cache.signature(p)?)))
            .collect::<Result<_>>()?;
        for (p, s) in &sigs {
            if s == "missing" && task.outputs.contains(p) {
                bail!(
                    "task {} did not write its declared output {}",
                    task.name,
                    rel(p, &self.opts.display_root)
                );
            }
        }
        let new_outputs: BTreeMap<PathBuf, String> = sigs.into_iter().collect();
        if let Some(old) = self.record(&task.name) {
            let stale: Vec<PathBuf> = old
                .outputs
                .into_keys()
                .filter(|p| !new_outputs.contains_key(p))
                .collect();
            self.remove_outputs(&task.name, &stale, false)?;
        }
        let record = TaskRecord {
            inputs,
            outputs: new_outputs,
            duration_s: started.elapsed().as_secs_f64(),
            from_cache,
        };
        self.commit_record(&task.name, Some(record))
    }

    /// Asks the result cache for `task`'s outputs; on a verified hit records the task as done
    /// (like a run) and returns true. A miss, an error or a record that lacks a declared output
    /// returns false: the action runs.
    fn restore_cached(
        &self,
        rc: &dyn ResultCache,
        task: &Task,
        key: &str,
        inputs: &BTreeMap<String, String>,
        started: Instant,
    ) -> bool {
        let outputs = match rc.restore(&task.name, key) {
            Ok(Some(o)) => o,
            Ok(None) => return false,
            Err(e) => {
                self.report.note(
                    &task.name,
                    &format!("result cache: {}; running it", super::error_text(&e)),
                );
                return false;
            }
        };
        if let Some(p) = outputs
            .iter()
            .map(|(p, _)| p)
            .find(|p| !self.may_restore(task, p))
        {
            self.report.note(
                &task.name,
                &format!(
                    "result cache: the record names {}, not this task's to write; running it",
                    rel(p, &self.opts.display_root)
                ),
            );
            return false;
        }
        let restored: Vec<&PathBuf> = outputs.iter().map(|(p, _)| p).collect();
        if let Some(p) = task.outputs.iter().find(|p| !restored.contains(p)) {
            self.report.note(
                &task.name,
                &format!(
                    "result cache: the record lacks the declared output {}; running it",
                    rel(p, &self.opts.display_root)
                ),
            );
            return false;
        }
        let ctx = TaskContext {
            name: task.name.clone(),
            extra_outputs: outputs.iter().map(|(p, _)| p.clone()).collect(),
            known_digests: outputs,
            report: self.report.clone(),
            cache: self.cache.clone(),
        };
        self.forget_walks_of(task, &ctx.extra_outputs);
        match self.finish_success(task, ctx, inputs.clone(), started, true) {
            Ok(()) => true,
            Err(e) => {
                self.report.note(
                    &task.name,
                    &format!("result cache: {}; running it", super::error_text(&e)),
                );
                false
            }
        }
    }

    /// Whether a result-cache record may write `p` for `task`: under a prune root, outside the
    /// state directory, and not another task's declared output or owned directory.
    fn may_restore(&self, task: &Task, p: &Path) -> bool {
        let under_root = self.opts.prune_roots.iter().any(|r| p.starts_with(r));
        let state_dir = p.starts_with(self.opts.build_root.join(".buildchain"));
        let others = self.graph.tasks().filter(|t| t.name != task.name).any(|t| {
            t.outputs.iter().any(|o| o == p) || t.owned_dirs.iter().any(|d| p.starts_with(d))
        });
        under_root && !state_dir && !others
    }

    /// Gives the outputs of a successful run of a cacheable task to the result cache (a
    /// failure is only a note: the build does not depend on the cache).
    fn record_cached(&self, rc: &dyn ResultCache, task: &Task, key: &str) {
        let Some(rec) = self.record(&task.name) else {
            return;
        };
        let outputs: Vec<(PathBuf, String)> = rec.outputs.into_iter().collect();
        if let Err(e) = rc.record(&task.name, key, &outputs) {
            self.report.note(
                &task.name,
                &format!("result cache: not recorded: {}", super::error_text(&e)),
            );
        }
    }
}
