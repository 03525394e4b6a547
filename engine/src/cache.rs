//! The optional result cache of cacheable tasks ([`crate::Task::cacheable`]): the engine computes
//! a key from the task's input signature and the tool version, and asks a [`ResultCache`] for
//! the outputs before running the action. The engine knows only this hook; where results live
//! (an OCI registry, for buildchain) is the implementation's business.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::{Digest, Sha256};

/// Stores and restores the outputs of cacheable tasks. Never trusted by design: `restore` must
/// verify what it materializes, and any error only makes the engine run the action.
pub trait ResultCache: Send + Sync {
    /// Materializes the outputs recorded under `key` (verified against their sha256) and returns
    /// `(path, sha256 hex)` of each; `None` on a miss (or a record it rejected).
    fn restore(&self, task: &str, key: &str) -> Result<Option<Vec<(PathBuf, String)>>>;
    /// Records the outputs `(path, sha256 hex)` of a successful run of `task` under `key`.
    fn record(&self, task: &str, key: &str, outputs: &[(PathBuf, String)]) -> Result<()>;
}

impl fmt::Debug for dyn ResultCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResultCache")
    }
}

/// The cache key of a task: sha256 hex of the tool version and its input signature (keys are
/// relative to the repository root already; absolute paths under `build_root` or `repo_root`
/// in values, such as the declared outputs, are made relative so that checkouts at other
/// places share keys).
pub fn task_key(
    tool_version: &str,
    inputs: &BTreeMap<String, String>,
    build_root: &Path,
    repo_root: &Path,
) -> String {
    let build = build_root.display().to_string();
    let repo = repo_root.display().to_string();
    let norm = |s: &str| s.replace(&build, "$BUILD").replace(&repo, "$REPO");
    let mut h = Sha256::new();
    h.update(b"buildchain task v1\0");
    h.update(tool_version.as_bytes());
    h.update(b"\0");
    for (k, v) in inputs {
        for part in [norm(k), norm(v)] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_do_not_depend_on_the_checkout_place() {
        let inputs = |root: &str| {
            BTreeMap::from([
                ("file:a.txt".to_string(), "00ff".to_string()),
                (
                    "value:declared outputs".to_string(),
                    format!("{root}/_build/out.rpm"),
                ),
            ])
        };
        let a = task_key(
            "1.0",
            &inputs("/a"),
            Path::new("/a/_build"),
            Path::new("/a"),
        );
        let b = task_key(
            "1.0",
            &inputs("/b"),
            Path::new("/b/_build"),
            Path::new("/b"),
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let c = task_key(
            "1.1",
            &inputs("/b"),
            Path::new("/b/_build"),
            Path::new("/b"),
        );
        assert_ne!(a, c);
    }
}
