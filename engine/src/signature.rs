//! Input and output signatures, with a stat fast path in front of content hashing.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::dirty::{DirtyReason, InputKey};
use super::state::FileRecord;
use super::task::Input;

/// Identity of a file's content as far as stat can tell: a file reached through many hard links
/// has one key, so its content is hashed once per run whatever the number of paths.
type InodeKey = (u64, u64, u64, i128);

/// Content cache shared by every task of a run: path → record (persisted), plus an index by
/// (device, inode, size, mtime) so hard links share one hash within a run (and across runs once
/// past the racy-mtime guard).
#[derive(Default)]
pub struct HashCache {
    files: Mutex<HashMap<PathBuf, FileRecord>>,
    by_inode: Mutex<HashMap<InodeKey, FileRecord>>,
    touched: Mutex<BTreeMap<PathBuf, FileRecord>>,
    /// Bytes hashed by this cache (for benchmarks: each inode at most once per run).
    pub hashed_bytes: AtomicU64,
    /// Signatures and tree listings computed while nothing could have changed the files (the
    /// engine's decisions before its first action or deletion): each path is stat'ed and each
    /// tree listed once per run however many tasks name it.
    memo: Mutex<HashMap<PathBuf, String>>,
    memo_on: AtomicBool,
    /// Tree listings, kept for the whole run once enabled: a listing is dropped when a task
    /// that may have changed it ends or the engine deletes under it ([`HashCache::forget_walks`]),
    /// so the ISO tree is listed once per build however many tasks and actions read it.
    walks: Mutex<HashMap<PathBuf, Vec<PathBuf>>>,
    walks_on: AtomicBool,
    /// Bumped by every [`HashCache::forget_walks`]: a listing taken across one is not kept.
    walk_generation: AtomicU64,
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Margin under which an mtime is too close to the hashing instant to be trusted, on file
/// systems with coarse timestamps (FAT: 2 s; ext3: 1 s; we cannot tell which).
const RACY_NS: i128 = 2_000_000_000;

/// The same margin when the mtime has sub-microsecond digits, i.e. the file system keeps
/// nanoseconds and only the kernel's coarse clock (one tick, at most 10 ms) limits it: a later
/// write gets an mtime at least `tick` after any hashing instant, so 50 ms is safe. This lets a
/// no-op build right after a build trust what that build just hashed.
const RACY_FINE_NS: i128 = 50_000_000;

fn racy_margin(mtime_ns: i128) -> i128 {
    if mtime_ns % 1000 != 0 {
        RACY_FINE_NS
    } else {
        RACY_NS
    }
}

fn inode_key(rec: &FileRecord) -> Option<InodeKey> {
    (rec.dev != 0).then_some((rec.dev, rec.ino, rec.size, rec.mtime_ns))
}

fn trusted(rec: &FileRecord) -> bool {
    rec.hashed_at_ns - rec.mtime_ns > racy_margin(rec.mtime_ns)
}

impl HashCache {
    /// Starts from the records of the state DB.
    pub fn new(files: BTreeMap<PathBuf, FileRecord>) -> Self {
        let mut by_inode = HashMap::new();
        for rec in files.values() {
            if let Some(k) = inode_key(rec) {
                if trusted(rec) {
                    by_inode.insert(k, rec.clone());
                }
            }
        }
        HashCache {
            files: Mutex::new(files.into_iter().collect()),
            by_inode: Mutex::new(by_inode),
            touched: Mutex::new(BTreeMap::new()),
            hashed_bytes: AtomicU64::new(0),
            memo: Mutex::new(HashMap::new()),
            walks: Mutex::new(HashMap::new()),
            memo_on: AtomicBool::new(false),
            walks_on: AtomicBool::new(false),
            walk_generation: AtomicU64::new(0),
        }
    }

    /// Starts memoizing signatures and tree listings (the engine, before deciding anything).
    pub fn enable_memo(&self) {
        self.memo_on.store(true, Ordering::SeqCst);
        self.walks_on.store(true, Ordering::SeqCst);
    }

    /// Stops memoizing signatures for the rest of the run: an action or a deletion may now
    /// change file contents. Tree listings stay, dropped one by one by [`HashCache::forget_walks`].
    pub fn disable_memo(&self) {
        if self.memo_on.swap(false, Ordering::SeqCst) {
            if let Ok(mut m) = self.memo.lock() {
                m.clear();
            }
        }
    }

    /// Drops every listing `paths` may have changed: the listings of directories holding one of
    /// them (or one of their parent directories), or lying under one of them or their parents.
    /// The engine calls it with a task's outputs and owned directories when the task ends, and
    /// with what it deletes.
    pub fn forget_walks<'p>(&self, paths: impl IntoIterator<Item = &'p Path>) {
        let mut touched: Vec<&Path> = Vec::new();
        for p in paths {
            touched.push(p);
            touched.extend(p.parent());
        }
        self.walk_generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut w) = self.walks.lock() {
            w.retain(|dir, _| {
                !touched
                    .iter()
                    .any(|p| p.starts_with(dir) || dir.starts_with(p))
            });
        }
    }

    /// Drops every listing.
    pub fn forget_all_walks(&self) {
        self.walk_generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut w) = self.walks.lock() {
            w.clear();
        }
    }

    /// [`walk_tree`], memoized for the run once the memo is enabled (see
    /// [`HashCache::forget_walks`]).
    pub fn walk(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        if !self.walks_on.load(Ordering::SeqCst) {
            return walk_tree(dir);
        }
        if let Some(v) = self.walks.lock().ok().and_then(|w| w.get(dir).cloned()) {
            return Ok(v);
        }
        let generation = self.walk_generation.load(Ordering::SeqCst);
        let v = walk_tree(dir)?;
        if let Ok(mut w) = self.walks.lock() {
            if self.walk_generation.load(Ordering::SeqCst) == generation {
                w.insert(dir.to_path_buf(), v.clone());
            }
        }
        Ok(v)
    }

    /// Every record (for the snapshot).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, FileRecord> {
        self.files
            .lock()
            .map(|f| f.iter().map(|(p, r)| (p.clone(), r.clone())).collect())
            .unwrap_or_default()
    }

    /// Records refreshed since the last call (for the journal).
    pub fn take_touched(&self) -> BTreeMap<PathBuf, FileRecord> {
        self.touched
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    /// Re-hashes the files hashed too close to their mtime to be trusted (typically written by
    /// this run), once the racy margin has passed, so the next no-op run trusts them without
    /// reading anything. Waits at most [`RACY_FINE_NS`]; files on coarse-timestamp file systems
    /// still inside their margin are left for the next run.
    pub fn settle(&self) -> Result<()> {
        let racy: Vec<(PathBuf, FileRecord)> = match self.files.lock() {
            Ok(f) => f
                .iter()
                .filter(|(_, r)| !trusted(r) && !r.sha256.starts_with("symlink:"))
                .map(|(p, r)| (p.clone(), r.clone()))
                .collect(),
            Err(_) => return Ok(()),
        };
        if racy.is_empty() {
            return Ok(());
        }
        let newest = racy
            .iter()
            .filter(|(_, r)| racy_margin(r.mtime_ns) == RACY_FINE_NS)
            .map(|(_, r)| r.mtime_ns)
            .max()
            .unwrap_or(0);
        let wait = newest + RACY_FINE_NS + 1 - now_ns();
        if wait > 0 {
            std::thread::sleep(std::time::Duration::from_nanos(wait as u64));
        }
        racy.par_iter().try_for_each(|(path, rec)| -> Result<()> {
            let Ok(meta) = fs::symlink_metadata(path) else {
                return Ok(());
            };
            if !meta.is_file() || !same_stat(rec, &meta) {
                return Ok(());
            }
            let fresh = record_from(&meta, String::new());
            if fresh.hashed_at_ns - fresh.mtime_ns <= racy_margin(fresh.mtime_ns) {
                return Ok(());
            }
            let sha = crate::fs::sha256_file(path)?;
            self.hashed_bytes.fetch_add(meta.len(), Ordering::Relaxed);
            self.insert(path, record_from(&meta, sha));
            Ok(())
        })
    }

    /// Whether records were refreshed since the last [`HashCache::take_touched`].
    pub fn has_touched(&self) -> bool {
        self.touched.lock().map(|t| !t.is_empty()).unwrap_or(true)
    }

    /// Pre-fills the cache with a digest an action computed while writing the file. The action
    /// renamed the file into place complete, so on a file system with fine timestamps the
    /// record is trusted at once (no re-hash of a just-written ISO by the next no-op build).
    pub fn remember(&self, path: &Path, sha256: &str) {
        if let Ok(meta) = fs::symlink_metadata(path) {
            let mut rec = record_from(&meta, sha256.to_string());
            if rec.mtime_ns % 1000 != 0 {
                rec.hashed_at_ns = rec.hashed_at_ns.max(rec.mtime_ns + RACY_FINE_NS + 1);
            }
            self.insert(path, rec);
        }
    }

    fn insert(&self, path: &Path, rec: FileRecord) {
        if let (Some(k), Ok(mut m)) = (inode_key(&rec), self.by_inode.lock()) {
            m.insert(k, rec.clone());
        }
        if let Ok(mut f) = self.files.lock() {
            f.insert(path.to_path_buf(), rec.clone());
        }
        if let Ok(mut t) = self.touched.lock() {
            t.insert(path.to_path_buf(), rec);
        }
    }

    /// Signature of one path: sha256 hex, `symlink:<target>`, `dir`, or `missing`.
    pub fn signature(&self, path: &Path) -> Result<String> {
        if !self.memo_on.load(Ordering::SeqCst) {
            return self.signature_now(path);
        }
        if let Some(s) = self.memo.lock().ok().and_then(|m| m.get(path).cloned()) {
            return Ok(s);
        }
        let s = self.signature_now(path)?;
        if self.memo_on.load(Ordering::SeqCst) {
            if let Ok(mut m) = self.memo.lock() {
                m.insert(path.to_path_buf(), s.clone());
            }
        }
        Ok(s)
    }

    fn signature_now(&self, path: &Path) -> Result<String> {
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
        if let Ok(files) = self.files.lock() {
            if let Some(rec) = files.get(path) {
                if same_stat(rec, &meta) && trusted(rec) {
                    return Ok(rec.sha256.clone());
                }
            }
        }
        let key = stat_key(&meta);
        let known = self.by_inode.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some(rec) = known {
            // Another path to the same inode (a hard link): same content, no read. Entries come
            // from this run, or from the state DB when they passed the racy-mtime guard.
            let sha = rec.sha256.clone();
            self.insert(path, rec);
            return Ok(sha);
        }
        let sha = crate::fs::sha256_file(path)?;
        self.hashed_bytes.fetch_add(meta.len(), Ordering::Relaxed);
        let rec = record_from(&meta, sha.clone());
        self.insert(path, rec);
        Ok(sha)
    }
}

fn stat_key(meta: &fs::Metadata) -> InodeKey {
    use std::os::unix::fs::MetadataExt;
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
    )
}

fn record_from(meta: &fs::Metadata, sha256: String) -> FileRecord {
    use std::os::unix::fs::MetadataExt;
    FileRecord {
        size: meta.len(),
        mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        ino: meta.ino(),
        dev: meta.dev(),
        sha256,
        hashed_at_ns: now_ns(),
    }
}

/// Same content as recorded, by stat: device, inode, size and mtime. The ctime is not compared:
/// every new hard link to an inode changes it without changing the content.
fn same_stat(rec: &FileRecord, meta: &fs::Metadata) -> bool {
    rec.dev != 0 && inode_key(rec) == Some(stat_key(meta))
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
                paths.extend(cache.walk(d)?.into_iter().filter(|p| !exclude.contains(p)));
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

/// Why `new` differs from `old` (at most `limit` reasons, then a count).
pub fn diff_reasons(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    limit: usize,
) -> Vec<DirtyReason> {
    let mut reasons = Vec::new();
    for (k, v) in new {
        match old.get(k) {
            None => reasons.push(DirtyReason::NewInput(InputKey::parse(k))),
            Some(o) if o != v => reasons.push(DirtyReason::Changed(InputKey::parse(k))),
            _ => {}
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            reasons.push(DirtyReason::RemovedInput(InputKey::parse(k)));
        }
    }
    if reasons.len() > limit {
        let more = reasons.len() - limit;
        reasons.truncate(limit);
        reasons.push(DirtyReason::MoreInputs(more));
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_links_are_hashed_once_and_new_links_keep_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        fs::write(&a, vec![7u8; 100_000]).unwrap();
        for i in 0..5 {
            fs::hard_link(&a, d.path().join(format!("l{i}"))).unwrap();
        }
        let cache = HashCache::default();
        let want = crate::fs::sha256_file(&a).unwrap();
        for i in 0..5 {
            let p = d.path().join(format!("l{i}"));
            assert_eq!(cache.signature(&p).unwrap(), want);
        }
        assert_eq!(cache.signature(&a).unwrap(), want);
        assert_eq!(cache.hashed_bytes.load(Ordering::Relaxed), 100_000);

        // A later run (records now past the racy guard): a new hard link changes every path's
        // ctime but nothing is read again.
        let mut files = cache.snapshot();
        for r in files.values_mut() {
            r.hashed_at_ns = r.mtime_ns + RACY_NS + 1;
        }
        fs::hard_link(&a, d.path().join("late")).unwrap();
        let cache = HashCache::new(files);
        for name in ["a", "l0", "l4", "late"] {
            assert_eq!(cache.signature(&d.path().join(name)).unwrap(), want);
        }
        assert_eq!(cache.hashed_bytes.load(Ordering::Relaxed), 0);

        // Different content (a new inode by rename) is hashed.
        let tmp = d.path().join("tmp");
        fs::write(&tmp, vec![8u8; 100_000]).unwrap();
        fs::rename(&tmp, &a).unwrap();
        assert_ne!(cache.signature(&a).unwrap(), want);
        assert_eq!(cache.hashed_bytes.load(Ordering::Relaxed), 100_000);
    }

    #[test]
    fn memo_answers_until_disabled() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        fs::write(&a, b"one").unwrap();
        let cache = HashCache::default();
        let one = cache.signature(&a).unwrap();
        cache.enable_memo();
        assert_eq!(cache.signature(&a).unwrap(), one);
        assert_eq!(cache.walk(d.path()).unwrap(), vec![a.clone()]);
        // Nothing changes files while the memo is on (the engine turns it off before any action
        // or deletion): a stale answer here shows the memo is used.
        fs::write(&a, b"two!").unwrap();
        let b = d.path().join("b");
        fs::write(&b, b"").unwrap();
        assert_eq!(cache.signature(&a).unwrap(), one);
        assert_eq!(cache.walk(d.path()).unwrap(), vec![a.clone()]);
        cache.disable_memo();
        assert_ne!(cache.signature(&a).unwrap(), one);
        // Listings outlive the signature memo until a change under them is reported.
        assert_eq!(cache.walk(d.path()).unwrap(), vec![a.clone()]);
        cache.forget_walks([Path::new("/elsewhere/x")]);
        assert_eq!(cache.walk(d.path()).unwrap(), vec![a.clone()]);
        cache.forget_walks([b.as_path()]);
        assert_eq!(cache.walk(d.path()).unwrap(), vec![a.clone(), b.clone()]);
    }

    #[test]
    fn settle_makes_just_written_files_trusted_by_the_next_run() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        fs::write(&a, b"fresh content").unwrap();
        // An mtime with nanosecond digits (a fine-timestamp file system), just now.
        let t = UNIX_EPOCH
            + std::time::Duration::from_nanos(((now_ns() - 1_000_000) / 1000 * 1000 + 123) as u64);
        fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(t)
            .unwrap();
        let cache = HashCache::default();
        let want = cache.signature(&a).unwrap();
        let rec = cache.snapshot()[&a].clone();
        assert_eq!(rec.mtime_ns % 1000, 123, "{rec:?}");
        assert!(!trusted(&rec), "{rec:?}");
        cache.settle().unwrap();
        assert!(trusted(&cache.snapshot()[&a]));
        let next = HashCache::new(cache.snapshot());
        assert_eq!(next.signature(&a).unwrap(), want);
        assert_eq!(next.hashed_bytes.load(Ordering::Relaxed), 0);
        assert!(!next.has_touched());
    }
}
