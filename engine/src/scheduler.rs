//! The scheduler: the closure and order of the targets, N workers pulling ready tasks, a failure
//! blocking its dependents only. It prints nothing: every event goes to the run's report.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};

use super::buildlog::write_build_log;
use super::dirty::DirtyReason;
use super::report;
use super::run::{Engine, RunOptions, RunSummary, Status, TaskResult};
use super::Graph;

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
                            matches!(
                                s.statuses.get(*d),
                                Some(Status::Success | Status::Cached | Status::WouldRun)
                            )
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
                            reasons: vec![DirtyReason::DependencyFailed(name.clone())],
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
