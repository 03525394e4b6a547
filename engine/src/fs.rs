//! File-system helpers every task uses: atomic writes, content-preserving updates, hashing,
//! hard-link-or-copy.
//!
//! Invariant: a path a task declares as output is either absent, its previous content, or its new
//! complete content — never half-written. Temp files are created beside their destination with
//! the [`TEMP_PREFIX`] prefix (so the rename is atomic on the same file system); the engine sweeps
//! leftovers of a killed run before it starts.
//!
//! Modes: files written here are 0644 (set explicitly, whatever the umask; [`AtomicFile::set_mode`]
//! overrides it), never the 0600 of a fresh temp file: the build tree is served and mastered as
//! is, and read by unprivileged users on a node.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Prefix of every temp file this module creates next to a destination. The engine deletes
/// leftovers with this prefix (from a killed run) under its output roots when it starts.
pub const TEMP_PREFIX: &str = ".bctmp-";

fn temp_dir_for(dest: &Path) -> PathBuf {
    dest.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Deletes leftover temp files and directories (see [`TEMP_PREFIX`]) under `root`; returns how
/// many entries were removed.
pub fn sweep_temp_files(root: &Path) -> usize {
    let mut n = 0;
    let mut walk = walkdir::WalkDir::new(root).into_iter();
    while let Some(Ok(e)) = walk.next() {
        if !e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let removed = if e.file_type().is_dir() {
            walk.skip_current_dir();
            fs::remove_dir_all(e.path()).is_ok()
        } else {
            fs::remove_file(e.path()).is_ok()
        };
        n += usize::from(removed);
    }
    n
}

/// Default mode of the files this module writes.
pub const FILE_MODE: u32 = 0o644;

/// Sets the permission bits of `path` to `mode` unless they already are (not subject to the
/// umask).
pub fn ensure_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
    }
    Ok(())
}

/// Mode of the directories this module creates.
pub const DIR_MODE: u32 = 0o755;

/// `create_dir_all`, with every directory it creates set to [`DIR_MODE`] whatever the umask
/// (existing directories are left alone). Each missing directory is made under a temp name,
/// chmod-ed, then renamed into place, so a crash never leaves one with the umask's mode (a
/// leftover temp directory is crash debris that [`TEMP_PREFIX`] sweeping removes).
pub fn create_dir_all(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a temp directory in {}", parent.display()))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("cannot chmod {}", tmp.path().display()))?;
    // Never onto an existing directory: rename(2) would replace an empty one that another task
    // has just made and is about to create entries in.
    match rename_noreplace(tmp.path(), dir) {
        Ok(()) => {
            let _ = tmp.keep();
            Ok(())
        }
        // Made meanwhile by another task (the temp directory is dropped).
        Err(_) if dir.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create directory {}", dir.display())),
    }
}

/// `rename` that fails with `AlreadyExists` instead of replacing `to` (`RENAME_NOREPLACE`; on a
/// file system without it, a check-then-rename).
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let f = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let t = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both pointers are NUL-terminated paths that outlive the call, which only reads them.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) {
        if std::fs::symlink_metadata(to).is_ok() {
            return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
        }
        return std::fs::rename(from, to);
    }
    Err(err)
}

/// A file being written; it appears at its destination only on [`AtomicFile::commit`].
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl AtomicFile {
    /// Starts writing `dest` (parent directories are created); mode [`FILE_MODE`] unless
    /// [`AtomicFile::set_mode`] says otherwise.
    pub fn create(dest: &Path) -> Result<Self> {
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir_all(parent)?;
        }
        let dir = temp_dir_for(dest);
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&dir)
            .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(FILE_MODE))
                .with_context(|| format!("cannot chmod temp file for {}", dest.display()))?;
        }
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
        })
    }
    /// The open temp file.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }
    /// Sets the mode of the file to be (e.g. 0o755).
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(self.tmp.path(), fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod temp file for {}", self.dest.display()))
    }
    /// Flushes, fsyncs and renames into place.
    pub fn commit(self) -> Result<()> {
        self.commit_with(true)
    }
    /// Renames into place, after an fsync when `durable` (without it, a power loss may leave an
    /// empty file; a crashed process still never leaves a partial one).
    pub fn commit_with(mut self, durable: bool) -> Result<()> {
        if durable {
            self.tmp
                .as_file_mut()
                .sync_all()
                .with_context(|| format!("cannot fsync {}", self.dest.display()))?;
        }
        let dest = self.dest.clone();
        crate::testhook::kill_point("write");
        self.tmp
            .persist(&dest)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot rename into {}", dest.display()))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// Writes `bytes` to `dest` atomically (temp file, fsync, rename).
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    f.commit()
}

/// Writes `bytes` to `dest` atomically unless it already holds exactly those bytes and `mode`
/// (default [`FILE_MODE`]). Returns whether the file changed. Unchanged files keep their mtime.
pub fn write_if_changed(dest: &Path, bytes: &[u8], mode: Option<u32>) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::symlink_metadata(dest) {
        if meta.is_file() && meta.len() == bytes.len() as u64 {
            let same_mode = meta.permissions().mode() & 0o7777 == mode.unwrap_or(FILE_MODE);
            if same_mode && fs::read(dest).map(|b| b == bytes).unwrap_or(false) {
                return Ok(false);
            }
        }
    }
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    if let Some(m) = mode {
        f.set_mode(m)?;
    }
    f.commit()?;
    Ok(true)
}

/// sha256 (hex) of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// sha256 (hex) of bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Makes `dest` a hard link to `src` (or a copy with the same permission bits when they are on
/// different file systems).
/// An existing `dest` that already is the same inode is left alone; anything else there is
/// replaced atomically.
pub fn link_or_copy(src: &Path, dest: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(s), Ok(d)) = (fs::metadata(src), fs::symlink_metadata(dest)) {
        if s.ino() == d.ino() && s.dev() == d.dev() {
            return Ok(());
        }
    }
    if let Some(parent) = dest.parent() {
        create_dir_all(parent)?;
    }
    let tmp = temp_dir_for(dest).join(format!(
        "{TEMP_PREFIX}link-{}-{}",
        std::process::id(),
        unique_counter()
    ));
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(src, &tmp).is_err() {
        let mut out = BufWriter::new(
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
        );
        let mut inp = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
        io::copy(&mut inp, &mut out).with_context(|| format!("cannot copy {}", src.display()))?;
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.set_permissions(inp.metadata()?.permissions())
            .with_context(|| format!("cannot chmod {}", tmp.display()))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dest).with_context(|| format!("cannot rename into {}", dest.display()))?;
    Ok(())
}

fn unique_counter() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Removes `path` if it exists, then its parent directories up to (not including) `stop` while
/// they are empty.
pub fn remove_file_and_empty_parents(path: &Path, stop: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    if let Some(parent) = path.parent() {
        remove_empty_parents(parent, stop);
    }
    Ok(())
}

/// Removes `dir` and its ancestors while they are empty, stopping at `stop` (kept).
pub fn remove_empty_parents(dir: &Path, stop: &Path) {
    let mut dir = Some(dir);
    while let Some(d) = dir {
        if d == stop || !d.starts_with(stop) {
            break;
        }
        if fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_temp_debris() {
        let d = tempfile::tempdir().unwrap();
        let keep = d.path().join("a/keep.txt");
        write_atomic(&keep, b"x").unwrap();
        fs::write(d.path().join("a/.bctmp-123"), b"partial").unwrap();
        fs::create_dir_all(d.path().join(".bctmp-sol.root.x/root/images")).unwrap();
        fs::write(d.path().join(".bctmp-sol.root.x/root/images/f"), b"y").unwrap();
        assert_eq!(sweep_temp_files(d.path()), 2);
        assert!(keep.exists());
        assert_eq!(fs::read_dir(d.path().join("a")).unwrap().count(), 1);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_writes_are_0644_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        // SAFETY: umask(2) only changes this process's file-creation mask.
        let old = unsafe { libc::umask(0o077) };
        let p = d.path().join("f");
        let r = write_atomic(&p, b"x");
        let q = d.path().join("g");
        let r2 = write_if_changed(&q, b"y", Some(0o755));
        let nested = d.path().join("a/b/c");
        let r3 = write_atomic(&nested, b"z");
        unsafe { libc::umask(old) };
        r.unwrap();
        r2.unwrap();
        r3.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&p), 0o644);
        assert_eq!(mode(&q), 0o755);
        assert_eq!(mode(&nested), 0o644);
        assert_eq!(mode(&d.path().join("a")), 0o755);
        assert_eq!(mode(&d.path().join("a/b")), 0o755);
    }

    #[test]
    fn write_if_changed_keeps_mtime_of_identical_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        assert!(write_if_changed(&p, b"same", Some(0o644)).unwrap());
        let m = fs::metadata(&p).unwrap().modified().unwrap();
        assert!(!write_if_changed(&p, b"same", Some(0o644)).unwrap());
        assert_eq!(fs::metadata(&p).unwrap().modified().unwrap(), m);
        assert!(write_if_changed(&p, b"same", Some(0o755)).unwrap());
        assert!(write_if_changed(&p, b"other", None).unwrap());
    }
}
