//! The build lock: one build at a time per build root.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Takes the exclusive lock on `<build_root>/.buildchain/lock` (held until the file is dropped);
/// an error names the build root when another build holds it.
pub(crate) fn lock_build_root(build_root: &Path) -> Result<File> {
    let dir = build_root.join(".buildchain");
    crate::fs::create_dir_all(&dir)?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .context("cannot open the build lock")?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(TryLockError::WouldBlock) => bail!(
            "another build is running in {} (lock held on .buildchain/lock)",
            build_root.display()
        ),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", dir.join("lock").display()))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_build_is_refused_until_the_first_ends() {
        let d = tempfile::tempdir().unwrap();
        let first = super::lock_build_root(d.path()).unwrap();
        let e = super::lock_build_root(d.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "another build is running in {} (lock held on .buildchain/lock)",
                d.path().display()
            )
        );
        drop(first);
        super::lock_build_root(d.path()).unwrap();
    }
}
