//! Pruning: outputs a task no longer produces, tasks gone from the graph, and `clean`. Deletion
//! only ever happens under the prune roots and never touches a file another task records.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::run::Engine;
use super::signature::rel;

impl Engine<'_> {
    pub(crate) fn under_prune_roots(&self, p: &Path) -> Option<&Path> {
        self.opts
            .prune_roots
            .iter()
            .find(|r| p.starts_with(r))
            .map(PathBuf::as_path)
    }

    /// Deletes outputs (only under prune roots, never one another task still records).
    pub(crate) fn remove_outputs(
        &self,
        owner: &str,
        paths: &[PathBuf],
        dry_run: bool,
    ) -> Result<Vec<String>> {
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
                self.cache.forget_walks([p.as_path()]);
                crate::fs::remove_file_and_empty_parents(p, root)?;
            }
            removed.push(rel(p, &self.opts.display_root));
        }
        Ok(removed)
    }

    /// Removes whole directories a task owns (only under the prune roots).
    pub(crate) fn remove_owned_dirs(&self, dirs: &[PathBuf], dry_run: bool) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for d in dirs {
            let Some(root) = self.under_prune_roots(d) else {
                continue;
            };
            if !std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            if !dry_run {
                self.cache.forget_walks([d.as_path()]);
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

    /// Removes outputs of tasks that are recorded but no longer in the graph.
    pub(crate) fn prune_orphans(&self) -> Result<Vec<String>> {
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
