//! `list` and `info`.

use std::fmt::Write;

use anyhow::{anyhow, Result};

use super::run::{Engine, RunOptions};
use super::scheduler::closure;
use super::signature::rel;
use super::task::Input;
use super::Graph;

/// Which tasks `list` shows: public tasks; `all` adds the other tasks except internal steps
/// (sub-tasks `task:item…`: one image, one package, one Salt file); `private` lists every task,
/// internal steps (repodata, checksums, generated files) included.
pub fn list(graph: &Graph, all: bool, private: bool) -> Vec<(String, String)> {
    graph
        .tasks()
        .filter(|t| t.public || private || (all && !t.internal))
        .map(|t| (t.name.clone(), t.doc.clone()))
        .collect()
}

/// A report on one task: doc, deps, inputs, outputs, and status (up to date, or stale and why).
pub fn info(graph: &Graph, name: &str, opts: RunOptions) -> Result<(String, bool)> {
    let task = graph
        .get(name)
        .ok_or_else(|| anyhow!("unknown task {name:?} (see `list --all`)"))?;
    closure(graph, &[name.to_string()])?;
    let root = opts.display_root.clone();
    let engine = Engine::open(graph, opts)?;
    let mut s = String::new();
    let _ = writeln!(s, "{}: {}", task.name, task.doc);
    let _ = writeln!(s, "  public: {}", task.public);
    let _ = writeln!(s, "  dependencies:");
    for d in &task.deps {
        let _ = writeln!(s, "    - {d}");
    }
    let _ = writeln!(s, "  inputs:");
    for i in &task.inputs {
        let _ = match i {
            Input::File(p) => writeln!(s, "    - file {}", rel(p, &root)),
            Input::Tree(p) => writeln!(s, "    - tree {}/", rel(p, &root)),
            Input::Value { key, value } => {
                let shown: String = value.chars().take(60).collect();
                let more = if value.chars().count() > 60 {
                    "…"
                } else {
                    ""
                };
                writeln!(s, "    - value {key} = {:?}{more}", shown)
            }
        };
    }
    let _ = writeln!(s, "  outputs:");
    let recorded = engine
        .state
        .lock()
        .ok()
        .and_then(|st| st.tasks.get(name).map(|r| r.outputs.len()));
    for o in &task.outputs {
        let _ = writeln!(s, "    - {}", rel(o, &root));
    }
    if let Some(n) = recorded {
        let _ = writeln!(s, "    ({n} recorded by the last run)");
    }
    if task.action.is_none() {
        let _ = writeln!(s, "  status: group task (runs its dependencies)");
        return Ok((s, true));
    }
    let decision = engine.decide(task)?;
    if decision.reasons.is_empty() {
        let cached = engine
            .state
            .lock()
            .ok()
            .and_then(|st| st.tasks.get(name).map(|r| r.from_cache))
            .unwrap_or(false);
        if cached {
            let _ = writeln!(s, "  status: up-to-date (from remote cache)");
        } else {
            let _ = writeln!(s, "  status: up-to-date");
        }
        Ok((s, true))
    } else {
        let _ = writeln!(s, "  status: stale, would run because:");
        for r in &decision.reasons {
            let _ = writeln!(s, "    - {r}");
        }
        Ok((s, false))
    }
}
