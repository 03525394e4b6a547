//! Decisions: is a task up to date, and if not, why (a [`DirtyReason`] per difference). In a
//! dry run, a task whose inputs a would-run task rewrites would run too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::dirty::DirtyReason;
use super::run::Engine;
use super::signature::{diff_reasons, input_signatures, rel};
use super::task::{Input, Task};

/// Whether a task is up to date, and if not why.
pub struct Decision {
    /// Empty when up to date.
    pub reasons: Vec<DirtyReason>,
    /// Current input signatures.
    pub inputs: BTreeMap<String, String>,
}

impl Engine<'_> {
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
                reasons: vec![DirtyReason::NeverRan],
                inputs,
            });
        };
        let mut reasons = diff_reasons(&old.inputs, &inputs, 10);
        let mut bad_outputs = Vec::new();
        for (path, sig) in &old.outputs {
            let now = self.cache.signature(path)?;
            if &now != sig {
                let shown = rel(path, &self.opts.display_root);
                bad_outputs.push(if now == "missing" {
                    DirtyReason::OutputMissing(shown)
                } else {
                    DirtyReason::OutputModified(shown)
                });
            }
        }
        for p in &task.outputs {
            if !old.outputs.contains_key(p) {
                bad_outputs.push(DirtyReason::NewOutput(rel(p, &self.opts.display_root)));
            }
        }
        if bad_outputs.len() > 10 {
            let more = bad_outputs.len() - 10;
            bad_outputs.truncate(10);
            bad_outputs.push(DirtyReason::MoreOutputs(more));
        }
        reasons.extend(bad_outputs);
        Ok(Decision { reasons, inputs })
    }

    /// Dry run: why `task`'s inputs would change because a task judged would-run before it
    /// rewrites them (an input file, or a file under an input tree that the task does not
    /// exclude).
    pub(crate) fn inputs_rewritten(&self, task: &Task) -> Vec<DirtyReason> {
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
                reasons.insert(DirtyReason::DependencyWouldRun(writer.clone()));
            }
        }
        reasons.into_iter().collect()
    }

    /// Dry run: records the outputs `task` would rewrite (declared, owned directories, and those
    /// of its last success).
    pub(crate) fn note_would_change(&self, task: &Task) {
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
}
