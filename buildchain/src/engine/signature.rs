//! Input and output signatures, with a stat fast path in front of content hashing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::state::FileRecord;
use super::task::Input;

/// Content cache shared by every task of a run.
#[derive(Default)]
pub struct HashCache {
    files: Mutex<BTreeMap<PathBuf, FileRecord>>,
    touched: Mutex<BTreeMap<PathBuf, FileRecord>>,
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Margin under which an mtime is too close to the hashing instant to be trusted.
const RACY_NS: i128 = 2_000_000_000;

impl HashCache {
    /// Starts from the records of the state DB.
    pub fn new(files: BTreeMap<PathBuf, FileRecord>) -> Self {
        HashCache {
            files: Mutex::new(files),
            touched: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every record (for the snapshot).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, FileRecord> {
        self.files.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Records refreshed since the last call (for the journal).
    pub fn take_touched(&self) -> BTreeMap<PathBuf, FileRecord> {
        self.touched
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    /// Pre-fills the cache with a digest an action computed while writing the file.
    pub fn remember(&self, path: &Path, sha256: &str) {
        if let Ok(meta) = fs::symlink_metadata(path) {
            let rec = record_from(&meta, sha256.to_string());
            self.insert(path, rec);
        }
    }

    fn insert(&self, path: &Path, rec: FileRecord) {
        if let Ok(mut f) = self.files.lock() {
            f.insert(path.to_path_buf(), rec.clone());
        }
        if let Ok(mut t) = self.touched.lock() {
            t.insert(path.to_path_buf(), rec);
        }
    }

    /// Signature of one path: sha256 hex, `symlink:<target>`, `dir`, or `missing`.
    pub fn signature(&self, path: &Path) -> Result<String> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok("missing".into()),
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(path)
                .with_context(|| format!("cannot read link {}", path.display()))?;
            return Ok(format!("symlink:{}", target.display()));
        }
        if meta.is_dir() {
            return Ok("dir".into());
        }
        let mut known = None;
        if let Ok(files) = self.files.lock() {
            if let Some(rec) = files.get(path) {
                if same_stat(rec, &meta) {
                    if rec.hashed_at_ns - rec.mtime_ns > RACY_NS {
                        return Ok(rec.sha256.clone());
                    }
                    known = Some(rec.sha256.clone());
                }
            }
        }
        let sha = crate::fsutil::sha256_file(path)?;
        let rec = record_from(&meta, sha.clone());
        // A re-hash that confirms the record and is itself still in the racy window teaches
        // nothing: keep the old record, so a no-op run leaves the state DB untouched.
        if known.as_deref() == Some(sha.as_str()) && rec.hashed_at_ns - rec.mtime_ns <= RACY_NS {
            return Ok(sha);
        }
        self.insert(path, rec);
        Ok(sha)
    }
}

fn record_from(meta: &fs::Metadata, sha256: String) -> FileRecord {
    use std::os::unix::fs::MetadataExt;
    FileRecord {
        size: meta.len(),
        mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        ino: meta.ino(),
        sha256,
        hashed_at_ns: now_ns(),
    }
}

fn same_stat(rec: &FileRecord, meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    rec.size == meta.len()
        && rec.ino == meta.ino()
        && rec.mtime_ns == meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
        && rec.ctime_ns == meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128
}

/// Lists regular files and symlinks under `dir`, sorted (symlinks are not followed).
pub fn walk_tree(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("cannot walk {}", dir.display()))?;
        let ft = entry.file_type();
        if ft.is_file() || ft.is_symlink() {
            out.push(entry.into_path());
        }
    }
    Ok(out)
}

/// Computes `key → signature` for a task's inputs (file hashes in parallel); files listed in
/// `exclude` are left out of tree inputs.
pub fn input_signatures(
    cache: &HashCache,
    inputs: &[Input],
    exclude: &[PathBuf],
    display_root: &Path,
) -> Result<BTreeMap<String, String>> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut out = BTreeMap::new();
    for input in inputs {
        match input {
            Input::File(p) => paths.push(p.clone()),
            Input::Tree(d) => {
                let present = if d.is_dir() { "present" } else { "missing" };
                out.insert(
                    format!("tree:{}", rel(d, display_root)),
                    present.to_string(),
                );
                // A task's own outputs are not its inputs (e.g. a manifest of the tree it is in).
                paths.extend(walk_tree(d)?.into_iter().filter(|p| !exclude.contains(p)));
            }
            Input::Value { key, value } => {
                out.insert(format!("value:{key}"), value.clone());
            }
        }
    }
    let sigs: Vec<(String, String)> = paths
        .par_iter()
        .map(|p| {
            Ok((
                format!("file:{}", rel(p, display_root)),
                cache.signature(p)?,
            ))
        })
        .collect::<Result<_>>()?;
    out.extend(sigs);
    Ok(out)
}

/// `path` relative to `root` when under it, for stable keys and readable reasons.
pub fn rel(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Human reasons why `new` differs from `old` (at most `limit` lines, then a count).
pub fn diff_reasons(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    limit: usize,
) -> Vec<String> {
    let mut reasons = Vec::new();
    for (k, v) in new {
        match old.get(k) {
            None => reasons.push(format!("new input {}", pretty_key(k))),
            Some(o) if o != v => reasons.push(format!("changed {}", pretty_key(k))),
            _ => {}
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            reasons.push(format!("removed input {}", pretty_key(k)));
        }
    }
    if reasons.len() > limit {
        let more = reasons.len() - limit;
        reasons.truncate(limit);
        reasons.push(format!("… and {more} more"));
    }
    reasons
}

fn pretty_key(k: &str) -> String {
    if let Some(f) = k.strip_prefix("file:") {
        format!("file {f}")
    } else if let Some(v) = k.strip_prefix("value:") {
        format!("value `{v}`")
    } else if let Some(t) = k.strip_prefix("tree:") {
        format!("tree {t}")
    } else {
        k.to_string()
    }
}
