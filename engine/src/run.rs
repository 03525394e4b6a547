//! The scheduler: decides what is stale, runs it on N workers, records the results.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;

use super::report::{self, Report, SilentReport};
use super::signature::{diff_reasons, input_signatures, rel, HashCache};
use super::state::{State, StateDb, TaskRecord};
use super::task::{Input, Task, TaskContext};
use super::Graph;

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
    pub reasons: Vec<String>,
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

/// Whether a task is up to date, and if not why.
pub struct Decision {
    /// Empty when up to date.
    pub reasons: Vec<String>,
    /// Current input signatures.
    pub inputs: BTreeMap<String, String>,
}

/// Shared machinery of a run, `info` and `clean`.
pub struct Engine<'g> {
    /// The graph.
    pub graph: &'g Graph,
    pub(crate) opts: RunOptions,
    pub(crate) state: Mutex<State>,
    pub(crate) cache: std::sync::Arc<HashCache>,
    db: Mutex<StateDb>,
    /// Where the run's events go (the scheduler prints nothing itself).
    report: Arc<dyn Report>,
    /// Dry run: `(path, task)` for every output of a task judged would-run so far; a later task
    /// whose inputs cover one of these paths would run too.
    would_change: Mutex<Vec<(PathBuf, String)>>,
    _lock: Option<std::fs::File>,
}

fn lock_build_root(build_root: &Path) -> Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let dir = build_root.join(".buildchain");
    crate::fs::create_dir_all(&dir)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .context("cannot open the build lock")?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another build is running in {} (lock held on .buildchain/lock)",
            build_root.display()
        );
    }
    Ok(f)
}

impl<'g> Engine<'g> {
    /// Opens the state DB of `opts.build_root` and takes the build lock.
    pub fn open(graph: &'g Graph, opts: RunOptions) -> Result<Self> {
        let lock = lock_build_root(&opts.build_root)?;
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

    fn record(&self, name: &str) -> Option<TaskRecord> {
        self.state.lock().ok()?.tasks.get(name).cloned()
    }

    /// Computes whether `task` is up to date against the last recorded success.
    pub fn decide(&self, task: &Task) -> Result<Decision> {
        let excluded: Vec<PathBuf> = task
            .outputs
            .iter()
            .chain(&task.input_excludes)
            .cloned()
            .collect();
        let mut inputs = input_signatures(
            &self.cache,
            &task.inputs,
            &excluded,
            &self.opts.display_root,
        )?;
        let declared: Vec<String> = task
            .outputs
            .iter()
            .map(|p| rel(p, &self.opts.display_root))
            .collect();
        inputs.insert("value:declared outputs".into(), declared.join("\n"));
        let Some(old) = self.record(&task.name) else {
            return Ok(Decision {
                reasons: vec!["never ran successfully".into()],
                inputs,
            });
        };
        let mut reasons = diff_reasons(&old.inputs, &inputs, 10);
        let mut bad_outputs = Vec::new();
        for (path, sig) in &old.outputs {
            let now = self.cache.signature(path)?;
            if &now != sig {
                let what = if now == "missing" {
                    "missing"
                } else {
                    "modified"
                };
                bad_outputs.push(format!(
                    "output {what}: {}",
                    rel(path, &self.opts.display_root)
                ));
            }
        }
        for p in &task.outputs {
            if !old.outputs.contains_key(p) {
                bad_outputs.push(format!("new output {}", rel(p, &self.opts.display_root)));
            }
        }
        if bad_outputs.len() > 10 {
            let more = bad_outputs.len() - 10;
            bad_outputs.truncate(10);
            bad_outputs.push(format!("… and {more} more outputs"));
        }
        reasons.extend(bad_outputs);
        Ok(Decision { reasons, inputs })
    }

    fn under_prune_roots(&self, p: &Path) -> Option<&Path> {
        self.opts
            .prune_roots
            .iter()
            .find(|r| p.starts_with(r))
            .map(PathBuf::as_path)
    }

    /// Deletes outputs (only under prune roots, never one another task still records).
    fn remove_outputs(&self, owner: &str, paths: &[PathBuf], dry_run: bool) -> Result<Vec<String>> {
        self.cache.disable_memo();
        let claimed: BTreeSet<PathBuf> = self
            .state
            .lock()
            .map(|s| {
                s.tasks
                    .iter()
                    .filter(|(n, _)| n.as_str() != owner)
                    .flat_map(|(_, r)| r.outputs.keys().cloned())
                    .collect()
            })
            .unwrap_or_default();
        let mut removed = Vec::new();
        for p in paths {
            if claimed.contains(p) {
                continue;
            }
            let Some(root) = self.under_prune_roots(p) else {
                continue;
            };
            if std::fs::symlink_metadata(p).is_err() {
                continue;
            }
            if !dry_run {
                crate::fs::remove_file_and_empty_parents(p, root)?;
            }
            removed.push(rel(p, &self.opts.display_root));
        }
        Ok(removed)
    }

    /// Removes whole directories a task owns (only under the prune roots).
    fn remove_owned_dirs(&self, dirs: &[PathBuf], dry_run: bool) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for d in dirs {
            let Some(root) = self.under_prune_roots(d) else {
                continue;
            };
            if !std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            if !dry_run {
                std::fs::remove_dir_all(d)
                    .with_context(|| format!("cannot remove {}", d.display()))?;
                if let Some(parent) = d.parent() {
                    crate::fs::remove_empty_parents(parent, root);
                }
            }
            removed.push(rel(d, &self.opts.display_root));
        }
        Ok(removed)
    }

    fn commit_record(&self, name: &str, record: Option<TaskRecord>) -> Result<()> {
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

    /// Removes the outputs and records of `names`; returns what was (or would be) removed.
    pub fn clean(&self, names: &[String], dry_run: bool) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for name in names {
            let mut paths: BTreeSet<PathBuf> = self
                .record(name)
                .map(|r| r.outputs.into_keys().collect())
                .unwrap_or_default();
            if let Some(t) = self.graph.get(name) {
                paths.extend(t.outputs.iter().cloned());
            }
            let paths: Vec<PathBuf> = paths.into_iter().collect();
            removed.extend(self.remove_outputs(name, &paths, dry_run)?);
            if let Some(t) = self.graph.get(name) {
                removed.extend(self.remove_owned_dirs(&t.owned_dirs, dry_run)?);
            }
            if !dry_run {
                self.commit_record(name, None)?;
            }
        }
        if !dry_run {
            self.save()?;
        }
        Ok(removed)
    }

    /// Runs (or, in a dry run, judges) one task. `ran_deps` are the dependencies that ran (or
    /// would run): in a dry run their outputs are about to change, so the task would run too.
    fn run_one(&self, task: &Task, ran_deps: &[String]) -> TaskResult {
        let started = Instant::now();
        let mut result = TaskResult {
            name: task.name.clone(),
            status: Status::Skipped,
            duration_s: 0.0,
            reasons: Vec::new(),
            error: None,
        };
        let dep_reasons: Vec<String> = if self.opts.dry_run {
            ran_deps
                .iter()
                .map(|d| format!("dependency {d} would run"))
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
        let mut ctx = TaskContext {
            name: task.name.clone(),
            extra_outputs: Vec::new(),
            known_digests: Vec::new(),
            report: self.report.clone(),
            cache: self.cache.clone(),
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| action(&mut ctx)))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(anyhow!("task panicked: {msg}"))
            })
            .and_then(|()| self.finish_success(task, ctx, decision.inputs, started));
        result.duration_s = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => result.status = Status::Success,
            Err(e) => {
                result.status = Status::Error;
                result.error = Some(super::error_text(&e));
                let _ = self.commit_record(&task.name, None);
            }
        }
        result
    }

    /// Dry run: why `task`'s inputs would change because a task judged would-run before it
    /// rewrites them (an input file, or a file under an input tree that the task does not
    /// exclude).
    fn inputs_rewritten(&self, task: &Task) -> Vec<String> {
        let changing = self.would_change.lock().expect("dry-run lock");
        let excluded = |p: &Path| {
            task.outputs
                .iter()
                .chain(&task.input_excludes)
                .any(|e| e == p)
        };
        let mut reasons = BTreeSet::new();
        for (path, writer) in changing.iter() {
            let covered = task.inputs.iter().any(|i| match i {
                Input::File(f) => f == path,
                Input::Tree(t) => (path.starts_with(t) || t.starts_with(path)) && !excluded(path),
                Input::Value { .. } => false,
            });
            if covered {
                reasons.insert(format!("dependency {writer} would run"));
            }
        }
        reasons.into_iter().collect()
    }

    /// Dry run: records the outputs `task` would rewrite (declared, owned directories, and those
    /// of its last success).
    fn note_would_change(&self, task: &Task) {
        let mut paths: Vec<PathBuf> = task
            .outputs
            .iter()
            .chain(&task.owned_dirs)
            .cloned()
            .collect();
        if let Some(old) = self.record(&task.name) {
            paths.extend(old.outputs.keys().cloned());
        }
        let mut changing = self.would_change.lock().expect("dry-run lock");
        changing.extend(paths.into_iter().map(|p| (p, task.name.clone())));
    }

    fn finish_success(
        &self,
        task: &Task,
        ctx: TaskContext,
        inputs: BTreeMap<String, String>,
        started: Instant,
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
        };
        self.commit_record(&task.name, Some(record))
    }

    /// Removes outputs of tasks that are recorded but no longer in the graph.
    fn prune_orphans(&self) -> Result<Vec<String>> {
        let orphans: Vec<(String, Vec<PathBuf>)> = self
            .state
            .lock()
            .map(|s| {
                s.tasks
                    .iter()
                    .filter(|(n, _)| self.graph.get(n).is_none())
                    .map(|(n, r)| (n.clone(), r.outputs.keys().cloned().collect()))
                    .collect()
            })
            .unwrap_or_default();
        let mut removed = Vec::new();
        for (name, paths) in orphans {
            if let Ok(mut s) = self.state.lock() {
                s.tasks.remove(&name);
            }
            removed.extend(self.remove_outputs(&name, &paths, false)?);
            self.commit_record(&name, None)?;
        }
        Ok(removed)
    }
}

/// Every task needed to build `targets` (targets and their transitive dependencies).
pub fn closure(graph: &Graph, targets: &[String]) -> Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<(String, Option<String>)> =
        targets.iter().map(|t| (t.clone(), None)).collect();
    while let Some((name, from)) = stack.pop() {
        let Some(task) = graph.get(&name) else {
            match from {
                Some(f) => bail!("task {f:?} depends on unknown task {name:?}"),
                None => bail!("unknown task {name:?}"),
            }
        };
        if seen.insert(name.clone()) {
            for d in &task.deps {
                stack.push((d.clone(), Some(name.clone())));
            }
        }
    }
    Ok(seen)
}

/// Topological order of `set` (error naming a cycle).
pub fn topo_order(graph: &Graph, set: &BTreeSet<String>) -> Result<Vec<String>> {
    let mut indeg: BTreeMap<&str, usize> = set.iter().map(|n| (n.as_str(), 0)).collect();
    let mut rdeps: HashMap<&str, Vec<&str>> = HashMap::new();
    for n in set {
        if let Some(t) = graph.get(n) {
            for d in &t.deps {
                *indeg.get_mut(n.as_str()).unwrap_or(&mut 0) += 1;
                rdeps.entry(d.as_str()).or_default().push(n.as_str());
            }
        }
    }
    let mut queue: VecDeque<&str> = indeg
        .iter()
        .filter(|(_, &d)| d == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut order = Vec::new();
    while let Some(n) = queue.pop_front() {
        order.push(n.to_string());
        for r in rdeps.get(n).cloned().unwrap_or_default() {
            if let Some(d) = indeg.get_mut(r) {
                *d -= 1;
                if *d == 0 {
                    queue.push_back(r);
                }
            }
        }
    }
    if order.len() != set.len() {
        let stuck: Vec<&str> = indeg
            .iter()
            .filter(|(_, &d)| d > 0)
            .map(|(n, _)| *n)
            .take(6)
            .collect();
        bail!("dependency cycle among tasks: {}", stuck.join(", "));
    }
    Ok(order)
}

struct Sched {
    pending_deps: HashMap<String, usize>,
    ready: VecDeque<String>,
    statuses: HashMap<String, Status>,
    done: usize,
    results: Vec<TaskResult>,
}

/// Builds `targets` (already expanded names) and everything they depend on.
pub fn run(graph: &Graph, targets: &[String], opts: RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let set = closure(graph, targets)?;
    topo_order(graph, &set)?;
    let mut engine = Engine::open(graph, opts.clone())?;
    // Tasks gone from the graph (an image dropped from the inventory, a deleted Salt file) lose
    // their outputs first, so nothing downstream sees them.
    let pruned = if opts.dry_run {
        Vec::new()
    } else {
        engine.prune_orphans()?
    };
    engine.report = report::for_kind(opts.reporter, opts.progress_bars);
    let engine = engine;

    let mut rdeps: HashMap<String, Vec<String>> = HashMap::new();
    let mut pending = HashMap::new();
    for n in &set {
        let t = graph.get(n).expect("closure holds known tasks");
        pending.insert(n.clone(), t.deps.len());
        for d in &t.deps {
            rdeps.entry(d.clone()).or_default().push(n.clone());
        }
    }
    let ready: VecDeque<String> = pending
        .iter()
        .filter(|(_, &c)| c == 0)
        .map(|(n, _)| n.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let sched = Mutex::new(Sched {
        pending_deps: pending,
        ready,
        statuses: HashMap::new(),
        done: 0,
        results: Vec::new(),
    });
    let cv = Condvar::new();
    let total = set.len();
    let jobs = opts.jobs.max(1);

    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let name = {
                    let mut s = sched.lock().expect("scheduler lock");
                    loop {
                        if s.done >= total {
                            return;
                        }
                        if let Some(n) = s.ready.pop_front() {
                            break n;
                        }
                        s = cv.wait(s).expect("scheduler lock");
                    }
                };
                let task = graph.get(&name).expect("known task");
                let ran_deps: Vec<String> = {
                    let s = sched.lock().expect("scheduler lock");
                    task.deps
                        .iter()
                        .filter(|d| {
                            matches!(s.statuses.get(*d), Some(Status::Success | Status::WouldRun))
                        })
                        .cloned()
                        .collect()
                };
                let result = engine.run_one(task, &ran_deps);
                engine.report.task_finished(&result, opts.dry_run);
                let mut s = sched.lock().expect("scheduler lock");
                let failed = result.status == Status::Error;
                s.statuses.insert(name.clone(), result.status);
                s.results.push(result);
                s.done += 1;
                if failed {
                    // Block every transitive dependent.
                    let mut stack = rdeps.get(&name).cloned().unwrap_or_default();
                    while let Some(d) = stack.pop() {
                        if s.statuses.contains_key(&d) {
                            continue;
                        }
                        s.statuses.insert(d.clone(), Status::Blocked);
                        let blocked = TaskResult {
                            name: d.clone(),
                            status: Status::Blocked,
                            duration_s: 0.0,
                            reasons: vec![format!("dependency {name} failed")],
                            error: None,
                        };
                        engine.report.task_finished(&blocked, opts.dry_run);
                        s.results.push(blocked);
                        s.done += 1;
                        stack.extend(rdeps.get(&d).cloned().unwrap_or_default());
                    }
                } else {
                    for d in rdeps.get(&name).cloned().unwrap_or_default() {
                        if s.statuses.contains_key(&d) {
                            continue;
                        }
                        if let Some(c) = s.pending_deps.get_mut(&d) {
                            *c -= 1;
                            if *c == 0 {
                                s.ready.push_back(d);
                            }
                        }
                    }
                }
                cv.notify_all();
            });
        }
    });

    let s = sched
        .into_inner()
        .map_err(|_| anyhow!("scheduler lock poisoned"))?;
    let ok = s
        .results
        .iter()
        .all(|r| r.status != Status::Error && r.status != Status::Blocked);
    if !opts.dry_run {
        engine.save()?;
    }
    let summary = RunSummary {
        tasks: s.results,
        ok,
        duration_s: started.elapsed().as_secs_f64(),
        pruned,
    };
    // `build.log` is the log of the last run that did something: a dry run or a run with
    // nothing to do leaves it (and the state DB) untouched.
    let did_work =
        !summary.pruned.is_empty() || summary.tasks.iter().any(|t| t.status != Status::Skipped);
    if !opts.dry_run && did_work {
        write_build_log(&opts.build_root, started_at, targets, &summary)?;
    }
    engine.report.run_finished(&summary);
    Ok(summary)
}

fn write_build_log(
    build_root: &Path,
    started_at: u64,
    targets: &[String],
    summary: &RunSummary,
) -> Result<()> {
    let log = serde_json::json!({
        "started_at": started_at,
        "targets": targets,
        "result": if summary.ok { "success" } else { "failure" },
        "duration_s": summary.duration_s,
        "tasks": summary.tasks,
        "pruned": summary.pruned,
    });
    let bytes = serde_json::to_vec_pretty(&log)?;
    crate::fs::write_atomic(&build_root.join("build.log"), &bytes)
}
