//! Content-addressed blob store (SPEC §5.3), shared by every build and checkout.
//!
//! Layout: `<root>/blobs/sha256/<64 hex>`. A blob is written to a temp file inside the store,
//! hashed while written, and renamed to its name only when the digest matches: the store never
//! holds a blob whose content does not match its name. Images and RPMs reach the ISO tree by
//! hard links from here ([`crate::fsutil::link_or_copy`]).
//!
//! Temp files live in `<root>/tmp/`; every failure path drops (deletes) its temp file, and
//! entries older than [`TEMP_MAX_AGE`] (debris of a killed process) are swept when the store is
//! opened. [`Store::verify_all`], [`Store::usage`] and [`Store::gc`] back `buildchain store
//! verify|du|gc`.

mod source;

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

pub use source::{configured_sources, set_configured_sources, BlobSource};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Mode of every stored blob: world-readable, since blobs are hard-linked into the ISO tree that
/// unprivileged nginx workers serve (a temp file's 0600 must not leak into the store).
pub const BLOB_MODE: u32 = 0o644;

/// Age after which an entry of `<root>/tmp/` is debris of a killed process: a live fetch writes
/// to its temp file far more often (a stalled one is ended by the stall timeout first).
pub const TEMP_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Outcome of [`Store::verify_all`].
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Entries checked.
    pub checked: usize,
    /// `(name, reason)` of every bad entry (removed).
    pub bad: Vec<(String, String)>,
}

/// Outcome of [`Store::usage`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Number of blobs.
    pub blobs: u64,
    /// Their total size.
    pub blob_bytes: u64,
    /// Number of entries in `tmp/`.
    pub temp_files: u64,
    /// Their total size.
    pub temp_bytes: u64,
}

/// A content-addressed store rooted at a directory. Cheap to clone: clones share the same
/// store (and its chain of [`BlobSource`]s).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Sources asked, in order, on a miss before the caller's upstream (e.g. a remote cache).
    chain: RwLock<Vec<Arc<dyn BlobSource>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

/// Checks that `hex` is 64 lower-case hex characters.
pub fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Store {
    /// The default store: `$BUILDCHAIN_STORE`, else `$XDG_CACHE_HOME/buildchain`, else
    /// `~/.cache/buildchain`.
    pub fn default_root() -> PathBuf {
        if let Some(p) = std::env::var_os("BUILDCHAIN_STORE") {
            return PathBuf::from(p);
        }
        if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
            return PathBuf::from(p).join("buildchain");
        }
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(".cache").join("buildchain");
        }
        PathBuf::from(".buildchain-cache")
    }

    /// Opens (creating) a store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs)
            .with_context(|| format!("cannot create store directory {}", blobs.display()))?;
        fs::create_dir_all(root.join("tmp"))
            .with_context(|| format!("cannot create store directory {}", root.display()))?;
        let store = Store {
            inner: Arc::new(Inner {
                root,
                chain: RwLock::new(Vec::new()),
            }),
        };
        store.sweep_temp(TEMP_MAX_AGE);
        Ok(store)
    }

    /// The store at `root` opened once per process and shared by every task of a build (the
    /// remote cache configured for the process, if any, is attached when it is first opened).
    pub fn shared(root: impl AsRef<Path>) -> Result<Self> {
        static OPEN: OnceLock<Mutex<HashMap<PathBuf, Store>>> = OnceLock::new();
        let root = root.as_ref();
        let mut m = OPEN
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(s) = m.get(root) {
            return Ok(s.clone());
        }
        let s = Store::open(root)?;
        for src in source::configured_sources()? {
            s.add_source(src);
        }
        m.insert(root.to_path_buf(), s.clone());
        Ok(s)
    }

    /// Removes entries of `tmp/` in which nothing was modified for `max_age`; returns how many
    /// were removed.
    pub fn sweep_temp(&self, max_age: std::time::Duration) -> usize {
        let Ok(dir) = fs::read_dir(self.inner.root.join("tmp")) else {
            return 0;
        };
        let now = std::time::SystemTime::now();
        let mut n = 0;
        for e in dir.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            // A directory is as young as the newest thing in it.
            let newest = walkdir::WalkDir::new(e.path())
                .into_iter()
                .flatten()
                .filter_map(|f| f.metadata().ok()?.modified().ok())
                .max();
            let old = newest
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > max_age);
            if !old {
                continue;
            }
            let r = if meta.is_dir() {
                fs::remove_dir_all(e.path())
            } else {
                fs::remove_file(e.path())
            };
            n += usize::from(r.is_ok());
        }
        n
    }

    /// Re-hashes every blob; removes (and reports) those whose content does not hash to their
    /// name, and entries whose name is not a sha256 hex.
    pub fn verify_all(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for (name, path) in self.entries()? {
            report.checked += 1;
            let reason = if !is_sha256_hex(&name) || !path.is_file() {
                Some("not a sha256 blob name".to_string())
            } else {
                let got = crate::fsutil::sha256_file(&path)?;
                (got != name).then(|| format!("content hashes to sha256:{got}"))
            };
            if let Some(reason) = reason {
                let r = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                r.with_context(|| format!("cannot remove {}", path.display()))?;
                let shown = if is_sha256_hex(&name) {
                    format!("sha256:{name}")
                } else {
                    name
                };
                report.bad.push((shown, reason));
            }
        }
        Ok(report)
    }

    /// Counts blobs and temp files with their sizes.
    pub fn usage(&self) -> Result<Usage> {
        let mut u = Usage::default();
        for (_, path) in self.entries()? {
            u.blobs += 1;
            u.blob_bytes += fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        }
        if let Ok(dir) = fs::read_dir(self.inner.root.join("tmp")) {
            for e in dir.flatten() {
                u.temp_files += 1;
                for f in walkdir::WalkDir::new(e.path()).into_iter().flatten() {
                    if f.file_type().is_file() {
                        u.temp_bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
                    }
                }
            }
        }
        Ok(u)
    }

    /// Removes every blob no build tree links to (hard-link count 1) and returns
    /// `(sha256 hex, size)` of each. Blobs reach build trees by hard links, so a blob with a
    /// single link is used by no tree on this file system; it is fetched or rebuilt again when
    /// needed. (A tree on another file system holds copies and keeps nothing alive.)
    pub fn gc(&self) -> Result<Vec<(String, u64)>> {
        use std::os::unix::fs::MetadataExt;
        let mut removed = Vec::new();
        for (name, path) in self.entries()? {
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_file() && meta.nlink() == 1 {
                fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
                removed.push((name, meta.len()));
            }
        }
        Ok(removed)
    }

    /// `(name, path)` of every entry of `blobs/sha256/`, sorted by name.
    fn entries(&self) -> Result<Vec<(String, PathBuf)>> {
        let dir = self.inner.root.join("blobs").join("sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let e = e?;
            out.push((e.file_name().to_string_lossy().to_string(), e.path()));
        }
        out.sort();
        Ok(out)
    }

    /// Bytes available to us on the store's file system (`statvfs`), if it can be asked.
    pub fn free_bytes(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(self.inner.root.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed out-structure we own.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(c.as_ptr(), &mut st) != 0 {
                return None;
            }
            Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
        }
    }

    /// Refuses a blob of `size` bytes larger than `max` (`BUILDCHAIN_MAX_BLOB_BYTES`) or than
    /// the free space of the store's file system; `what` names the image/package and digest.
    pub fn check_room(&self, what: &str, size: u64, max: Option<u64>) -> Result<()> {
        if let Some(max) = max {
            if size > max {
                bail!(
                    "{what} declares {size} bytes, more than the maximum of {max} bytes (BUILDCHAIN_MAX_BLOB_BYTES)"
                );
            }
        }
        if let Some(free) = self.free_bytes() {
            if size > free {
                bail!(
                    "{what} declares {size} bytes, more than the {free} bytes free on the file system of the store {}",
                    self.inner.root.display()
                );
            }
        }
        Ok(())
    }

    /// Root directory (shown in messages; callers use the operations below, not paths).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the blob with this sha256 hex lives (whether or not present); for diagnostics and
    /// tests; build code uses [`Store::open_blob`], [`Store::materialize`] and friends.
    pub fn path(&self, hex: &str) -> PathBuf {
        self.inner.root.join("blobs").join("sha256").join(hex)
    }

    /// Whether the blob is present.
    pub fn contains(&self, hex: &str) -> bool {
        is_sha256_hex(hex) && self.path(hex).is_file()
    }

    /// Size of a stored blob.
    pub fn blob_len(&self, hex: &str) -> Result<u64> {
        Ok(fs::metadata(self.path(hex))
            .with_context(|| self.missing(hex))?
            .len())
    }

    fn missing(&self, hex: &str) -> String {
        format!(
            "blob sha256:{hex} is not in the store {}",
            self.inner.root.display()
        )
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, hex: &str) -> Result<fs::File> {
        if !is_sha256_hex(hex) {
            bail!("invalid sha256 digest {hex:?}");
        }
        fs::File::open(self.path(hex)).with_context(|| self.missing(hex))
    }

    /// Reads a whole stored blob (manifests, configs).
    pub fn read_blob(&self, hex: &str) -> Result<Vec<u8>> {
        let mut f = self.open_blob(hex)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)
            .with_context(|| format!("cannot read {}", self.path(hex).display()))?;
        Ok(v)
    }

    /// A scratch directory inside the store's file system (removed when dropped).
    pub fn temp_dir(&self) -> Result<tempfile::TempDir> {
        tempfile::tempdir_in(self.inner.root.join("tmp"))
            .context("cannot create a temp dir in the store")
    }

    /// Streams `reader` into the store, verifying sha256 (and `size` when given). On mismatch
    /// nothing is kept and the error names `what` (image, package…) and both digests.
    /// Returns the number of bytes written. A new blob is offered to the [`BlobSource`] chain
    /// (a writable remote cache pushes it).
    pub fn put_verified(
        &self,
        hex: &str,
        size: Option<u64>,
        reader: &mut dyn Read,
        what: &str,
    ) -> Result<u64> {
        let n = self.put_verified_quiet(hex, size, reader, what)?;
        self.offer(hex, n);
        Ok(n)
    }

    /// [`Store::put_verified`] without offering the blob to the chain (for blob sources
    /// themselves: what came from a cache is not pushed back to it).
    pub fn put_verified_quiet(
        &self,
        hex: &str,
        size: Option<u64>,
        reader: &mut dyn Read,
        what: &str,
    ) -> Result<u64> {
        if !is_sha256_hex(hex) {
            bail!("{what}: invalid sha256 digest {hex:?}");
        }
        let mut tmp = self.temp_file()?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n: u64 = 0;
        loop {
            let r = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).with_context(|| format!("{what}: read error")),
            };
            for _ in n / (256 << 10)..(n + r as u64) / (256 << 10) {
                crate::testhook::kill_point("store");
            }
            h.update(&buf[..r]);
            tmp.write_all(&buf[..r])
                .with_context(|| format!("{what}: cannot write to the store"))?;
            n += r as u64;
            if let Some(s) = size {
                if n > s {
                    bail!("{what}: sha256:{hex} is larger than its declared size {s}");
                }
            }
        }
        if let Some(s) = size {
            if n != s {
                bail!("{what}: sha256:{hex} has {n} bytes, expected {s}");
            }
        }
        let got = hex::encode(h.finalize());
        if got != hex {
            bail!("{what}: content does not match its digest: expected sha256:{hex}, got sha256:{got}");
        }
        self.persist(tmp, hex)?;
        Ok(n)
    }

    fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(self.inner.root.join("tmp"))
            .context("cannot create a temp file in the store")
    }

    /// Makes a verified temp file the blob `hex` (mode [`BLOB_MODE`], fsync, rename).
    fn persist(&self, mut tmp: tempfile::NamedTempFile, hex: &str) -> Result<()> {
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(BLOB_MODE))
                .context("cannot chmod store blob")?;
        }
        tmp.as_file_mut()
            .sync_all()
            .context("cannot fsync store blob")?;
        let dest = self.path(hex);
        tmp.persist(&dest)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot rename into {}", dest.display()))?;
        Ok(())
    }

    /// Adds bytes whose digest is computed here; returns the sha256 hex.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String> {
        let hex = hex::encode(Sha256::digest(bytes));
        if !self.contains(&hex) {
            self.put_verified(&hex, Some(bytes.len() as u64), &mut &bytes[..], "blob")?;
        }
        Ok(hex)
    }

    /// Streams `reader` into the store under its computed digest; returns (hex, size).
    pub fn put_unknown(&self, reader: &mut dyn Read) -> Result<(String, u64)> {
        let mut tmp = self.temp_file()?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let r = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            h.update(&buf[..r]);
            tmp.write_all(&buf[..r])?;
            n += r as u64;
        }
        let hex = hex::encode(h.finalize());
        if !self.contains(&hex) {
            self.persist(tmp, &hex)?;
            self.offer(&hex, n);
        }
        Ok((hex, n))
    }

    /// Re-hashes a stored blob and reports whether it still matches its name.
    pub fn verify(&self, hex: &str) -> Result<bool> {
        Ok(crate::fsutil::sha256_file(&self.path(hex))? == hex)
    }

    /// Hard-links (or copies, across file systems) a stored blob to `dest`, mode
    /// [`BLOB_MODE`]; a blob with another mode (written by an older version) is fixed first.
    pub fn materialize(&self, hex: &str, dest: &Path) -> Result<()> {
        if !self.contains(hex) {
            bail!("{}", self.missing(hex));
        }
        let src = self.path(hex);
        crate::fsutil::ensure_mode(&src, BLOB_MODE)?;
        crate::fsutil::link_or_copy(&src, dest)
    }

    /// Former name of [`Store::materialize`].
    pub fn link_to(&self, hex: &str, dest: &Path) -> Result<()> {
        self.materialize(hex, dest)
    }

    /// Whether `p` is a hard link of the (verified) stored blob `hex`: its digest is known
    /// without reading it again.
    pub fn is_link_of(&self, p: &Path, hex: &str) -> bool {
        use std::os::unix::fs::MetadataExt;
        if !is_sha256_hex(hex) {
            return false;
        }
        match (
            fs::symlink_metadata(p),
            fs::symlink_metadata(self.path(hex)),
        ) {
            (Ok(a), Ok(b)) => a.is_file() && a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Whether stored blob `hex` starts with the gzip magic.
    pub fn is_gzip(&self, hex: &str) -> Result<bool> {
        let mut magic = [0u8; 2];
        let mut f = self.open_blob(hex)?;
        let mut got = 0;
        while got < 2 {
            match f.read(&mut magic[got..])? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got == 2 && magic == [0x1f, 0x8b])
    }

    /// Appends a source asked on a miss before the caller's upstream (see [`Store::fetch_chain`]).
    pub fn add_source(&self, src: Arc<dyn BlobSource>) {
        self.inner
            .chain
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(src);
    }

    fn sources(&self) -> Vec<Arc<dyn BlobSource>> {
        self.inner
            .chain
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Offers a blob that entered the store from elsewhere to every source (a writable cache
    /// pushes it); sources report their own failures as warnings.
    fn offer(&self, hex: &str, size: u64) {
        for s in self.sources() {
            s.offer(self, hex, size);
        }
    }

    /// Makes blob `hex` present: the local store first, then each [`BlobSource`] of the chain
    /// (a failing source is a warning, never an error), then `upstream` (which must put the
    /// blob with [`Store::put_verified`]). Concurrent calls for the same blob in this process
    /// are collapsed. Returns what `upstream` returned, or 0 when it was not called.
    pub fn fetch_chain(
        &self,
        hex: &str,
        size: Option<u64>,
        what: &str,
        upstream: &mut dyn FnMut() -> Result<u64>,
    ) -> Result<u64> {
        let lock = inflight_lock(hex);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.contains(hex) {
            return Ok(0);
        }
        for s in self.sources() {
            match s.fetch(self, hex, size, what) {
                Ok(true) if self.contains(hex) => return Ok(0),
                Ok(_) => {}
                Err(e) => {
                    crate::store::warn(&format!("{}: {what}: sha256:{hex}: {e:#}", s.name()));
                }
            }
        }
        upstream()
    }
}

/// Process-wide lock per blob: concurrent requests for the same blob wait for one another.
fn inflight_lock(hex: &str) -> Arc<Mutex<()>> {
    static INFLIGHT: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    let m = INFLIGHT.get_or_init(Default::default);
    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
    g.entry(hex.to_string()).or_default().clone()
}

/// A warning of the blob chain on stderr (and to `tracing`): the cache is never trusted and
/// never fails a build, but the operator should know it was bypassed.
pub fn warn(msg: &str) {
    tracing::warn!("{msg}");
    eprintln!("warning: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory source: serves `blobs` (hex → bytes, possibly wrong), records offers.
    struct Memory {
        blobs: HashMap<String, Vec<u8>>,
        offered: Mutex<Vec<String>>,
    }

    impl BlobSource for Memory {
        fn name(&self) -> String {
            "memory".into()
        }
        fn fetch(&self, store: &Store, hex: &str, size: Option<u64>, what: &str) -> Result<bool> {
            let Some(b) = self.blobs.get(hex) else {
                return Ok(false);
            };
            store.put_verified_quiet(hex, size, &mut &b[..], what)?;
            Ok(true)
        }
        fn offer(&self, _store: &Store, hex: &str, _size: u64) {
            self.offered.lock().unwrap().push(hex.to_string());
        }
    }

    #[test]
    fn chain_asks_sources_before_upstream_and_offers_only_new_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (good, bad, other) = (b"cached".to_vec(), b"right".to_vec(), b"upstream".to_vec());
        let h = |b: &[u8]| hex::encode(Sha256::digest(b));
        let mem = Arc::new(Memory {
            blobs: [(h(&good), good.clone()), (h(&bad), b"wrong".to_vec())]
                .into_iter()
                .collect(),
            offered: Mutex::new(Vec::new()),
        });
        store.add_source(mem.clone());
        let mut calls = 0;
        // In the source: upstream is not called, nothing is offered back.
        let n = store
            .fetch_chain(&h(&good), Some(6), "t", &mut || {
                calls += 1;
                Ok(1)
            })
            .unwrap();
        assert_eq!((n, calls), (0, 0));
        assert_eq!(store.read_blob(&h(&good)).unwrap(), good);
        // Wrong bytes in the source: ignored (warning), upstream fills the store and the blob is
        // offered to the source.
        let n = store
            .fetch_chain(&h(&bad), Some(5), "t", &mut || {
                store.put_verified(&h(&bad), Some(5), &mut &bad[..], "t")
            })
            .unwrap();
        assert_eq!(n, 5);
        assert_eq!(store.read_blob(&h(&bad)).unwrap(), bad);
        // Not in the source at all.
        store
            .fetch_chain(&h(&other), None, "t", &mut || {
                store.put_verified(&h(&other), None, &mut &other[..], "t")
            })
            .unwrap();
        assert_eq!(*mem.offered.lock().unwrap(), vec![h(&bad), h(&other)]);
        // Present: nothing is asked.
        let n = store
            .fetch_chain(&h(&other), None, "t", &mut || panic!("upstream asked"))
            .unwrap();
        assert_eq!(n, 0);
    }
}
