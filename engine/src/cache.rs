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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use crate::run::{Reporter, RunOptions, Status};
    use crate::{Graph, Task};

    /// Recorded outputs: path relative to the root, bytes.
    type Recorded = Vec<(PathBuf, Vec<u8>)>;

    /// Results in memory, by key, with paths relative to the root they were recorded under
    /// (like a record's titles); `evil` adds a path outside the build root to every record.
    #[derive(Default)]
    struct Memory {
        root: Mutex<PathBuf>,
        records: Mutex<BTreeMap<String, Recorded>>,
        evil: bool,
    }

    impl ResultCache for Memory {
        fn restore(&self, _: &str, key: &str) -> Result<Option<Vec<(PathBuf, String)>>> {
            let root = self.root.lock().unwrap().clone();
            let Some(rec) = self.records.lock().unwrap().get(key).cloned() else {
                return Ok(None);
            };
            let mut out = Vec::new();
            for (rel, bytes) in rec {
                let p = root.join(rel);
                crate::fs::write_atomic(&p, &bytes)?;
                out.push((p, crate::fs::sha256_bytes(&bytes)));
            }
            if self.evil {
                out.push((PathBuf::from("/etc/passwd"), "0".repeat(64)));
            }
            Ok(Some(out))
        }
        fn record(&self, _: &str, key: &str, outputs: &[(PathBuf, String)]) -> Result<()> {
            let root = self.root.lock().unwrap().clone();
            let rec = outputs
                .iter()
                .map(|(p, _)| {
                    (
                        p.strip_prefix(&root).unwrap().to_path_buf(),
                        std::fs::read(p).unwrap(),
                    )
                })
                .collect();
            self.records.lock().unwrap().insert(key.to_string(), rec);
            Ok(())
        }
    }

    fn build(root: &Path, input: &Path, mem: &Arc<Memory>, runs: &Arc<AtomicUsize>) -> Status {
        *mem.root.lock().unwrap() = root.to_path_buf();
        let out = root.join("out.txt");
        let (i, o, n) = (input.to_path_buf(), out.clone(), runs.clone());
        let mut g = Graph::new();
        g.add(
            Task::new("t")
                .cacheable()
                .input_file(input)
                .output(&out)
                .action(move |_| {
                    n.fetch_add(1, Ordering::SeqCst);
                    let text = std::fs::read_to_string(&i)?.to_uppercase();
                    crate::fs::write_atomic(&o, text.as_bytes())
                }),
        )
        .unwrap();
        let mut opts = RunOptions::new(root, root);
        opts.reporter = Reporter::Silent;
        opts.tool_version = "1".into();
        opts.result_cache = Some(mem.clone() as Arc<dyn ResultCache>);
        let s = crate::run(&g, &["t".to_string()], opts).unwrap();
        assert!(s.ok);
        s.tasks[0].status
    }

    #[test]
    fn a_second_build_root_takes_the_result_from_the_cache() {
        let src = tempfile::tempdir().unwrap();
        let input = src.path().join("in.txt");
        std::fs::write(&input, "hello").unwrap();
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let mem = Arc::new(Memory::default());
        let runs = Arc::new(AtomicUsize::new(0));
        assert_eq!(build(a.path(), &input, &mem, &runs), Status::Success);
        assert_eq!(build(b.path(), &input, &mem, &runs), Status::Cached);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(
            std::fs::read_to_string(b.path().join("out.txt")).unwrap(),
            "HELLO"
        );
        // Up to date afterwards, like a run.
        assert_eq!(build(b.path(), &input, &mem, &runs), Status::Skipped);
        // Another input: another key, the action runs.
        std::fs::write(&input, "other").unwrap();
        assert_eq!(build(c.path(), &input, &mem, &runs), Status::Success);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // A record naming a path that is not the task's to write is refused: the action runs.
        let evil = Arc::new(Memory {
            evil: true,
            records: Mutex::new(mem.records.lock().unwrap().clone()),
            ..Memory::default()
        });
        let d = tempfile::tempdir().unwrap();
        assert_eq!(build(d.path(), &input, &evil, &runs), Status::Success);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

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
