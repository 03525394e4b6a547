//! `buildchain iso master|check|ls|extract`.

/// `buildchain iso …` sub-commands.
#[derive(clap::Subcommand, Debug)]
pub enum IsoCommand {
    /// Master a directory into an ISO-9660 image (Rock Ridge + Joliet, level 3).
    Master {
        /// Source directory.
        dir: std::path::PathBuf,
        /// Output ISO path.
        #[arg(short, long)]
        output: std::path::PathBuf,
        /// Volume identifier, e.g. "MetalK8s 130.0.0-dev".
        #[arg(long)]
        volid: String,
        /// Implant the isomd5sum record.
        #[arg(long)]
        md5: bool,
        /// Record the source modes verbatim (default: `mkisofs -r` modes, world-readable).
        #[arg(long)]
        keep_modes: bool,
    },
    /// Verify the structure (whole volume present, path tables, root directories) and the
    /// implanted MD5 (like `checkisomd5`).
    Check {
        /// ISO file.
        iso: std::path::PathBuf,
    },
    /// List the files of an ISO.
    Ls {
        /// ISO file.
        iso: std::path::PathBuf,
    },
    /// Extract an ISO into a directory.
    Extract {
        /// ISO file.
        iso: std::path::PathBuf,
        /// Destination directory.
        dest: std::path::PathBuf,
    },
}

/// Runs an `iso` sub-command; returns the process exit code (0 success/PASS, 1 FAIL).
pub fn run(cmd: &IsoCommand) -> anyhow::Result<u8> {
    match cmd {
        IsoCommand::Master {
            dir,
            output,
            volid,
            md5,
            keep_modes,
        } => {
            let opts = iso9660_writer::MasterOptions {
                volume_id: volid.clone(),
                timestamp: source_date_epoch()?,
                implant_md5: *md5,
                progress: None,
                keep_modes: *keep_modes,
            };
            let r = crate::isofile::master_with_options(dir, output, &opts, true, &|_| {})?;
            println!("{}: {} bytes", output.display(), r.size);
            println!("sha256 = {}", r.sha256_hex);
            if let Some(m) = &r.md5_hex {
                println!("isomd5sum = {m}");
            }
            println!(
                "{} files, {} directories, {} symlinks, {} extents ({} shared)",
                r.files, r.directories, r.symlinks, r.extents, r.shared_extents
            );
            Ok(0)
        }
        IsoCommand::Check { iso } => {
            let (text, code) = check_iso(iso)?;
            print!("{text}");
            Ok(code)
        }
        IsoCommand::Ls { iso } => {
            let mut reader = open_reader(iso)?;
            for e in reader
                .walk()
                .with_context(|| format!("cannot list {}", iso.display()))?
            {
                println!("{}", ls_line(&e));
            }
            Ok(0)
        }
        IsoCommand::Extract { iso, dest } => {
            let n = extract(iso, dest)?;
            println!("extracted {n} entries into {}", dest.display());
            Ok(0)
        }
    }
}

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use iso9660_writer::{CheckReport, CheckStatus, Entry, EntryKind, IsoReader};

/// `SOURCE_DATE_EPOCH` from the environment, else 0 (a fixed epoch keeps images reproducible).
pub fn source_date_epoch() -> anyhow::Result<i64> {
    Ok(crate::config::source_date_epoch_from_env()?.unwrap_or(0) as i64)
}

pub use crate::isofile::{master_atomic, master_to};

const FAIL_VERDICT: &str =
    "\nThe media check is complete, the result is: FAIL.\n\nIt is not recommended to use this media.\n";

/// `iso check`: the text to print and the exit code (0 PASS, 1 FAIL or NA). Structural problems
/// ([`iso9660_writer::structure_problems`], e.g. truncation inside the 15 sectors the MD5 skips)
/// are printed one per line, `<iso>: <problem>`, and make the result FAIL; otherwise the
/// isomd5sum check decides.
pub fn check_iso(iso: &Path) -> anyhow::Result<(String, u8)> {
    let mut f = fs::File::open(iso).with_context(|| format!("cannot open {}", iso.display()))?;
    let problems = iso9660_writer::structure_problems(&mut f)
        .with_context(|| format!("cannot check {}", iso.display()))?;
    if !problems.is_empty() {
        let mut s = String::new();
        for p in &problems {
            s.push_str(&format!("{}: {p}\n", iso.display()));
        }
        s.push_str(FAIL_VERDICT);
        return Ok((s, 1));
    }
    let r =
        iso9660_writer::check(iso).with_context(|| format!("cannot check {}", iso.display()))?;
    Ok((check_text(iso, &r), u8::from(r.status != CheckStatus::Pass)))
}

/// The text `checkisomd5 --verbose` prints (without the progress meter), then the verdict.
pub fn check_text(iso: &Path, r: &CheckReport) -> String {
    let mut s = String::new();
    if r.status == CheckStatus::NotImplanted {
        s.push_str(&format!(
            "{}: no checksum information available, unable to verify media.\n",
            iso.display()
        ));
        s.push_str("The media check is complete, the result is: NA.\n");
        return s;
    }
    s.push_str(&format!(
        "{}:   {}\n",
        iso.display(),
        r.expected_md5.as_deref().unwrap_or("")
    ));
    s.push_str(&format!(
        "Fragment sums: {}\n",
        r.fragment_sums.as_deref().unwrap_or("")
    ));
    s.push_str(&format!(
        "Fragment count: {}\n",
        r.fragment_count.unwrap_or(0)
    ));
    s.push_str(&format!(
        "Supported ISO: {}\n",
        if r.supported { "yes" } else { "no" }
    ));
    if let Some(c) = &r.computed_md5 {
        s.push_str(&format!("Computed MD5: {c}\n"));
    }
    if let Some(f) = r.failed_fragment {
        s.push_str(&format!("Fragment {f} does not match.\n"));
    }
    match r.status {
        CheckStatus::Pass => s.push_str(
            "\nThe media check is complete, the result is: PASS.\n\nIt is OK to use this media.\n",
        ),
        _ => s.push_str(FAIL_VERDICT),
    }
    s
}

fn open_reader(iso: &Path) -> anyhow::Result<IsoReader<fs::File>> {
    let f = fs::File::open(iso).with_context(|| format!("cannot open {}", iso.display()))?;
    IsoReader::open(f).with_context(|| format!("cannot read {}", iso.display()))
}

fn ls_line(e: &Entry) -> String {
    let mode = e.mode.unwrap_or(match e.kind {
        EntryKind::Dir => 0o040555,
        EntryKind::Symlink(_) => 0o120777,
        _ => 0o100444,
    });
    let t = match e.kind {
        EntryKind::Dir => 'd',
        EntryKind::Symlink(_) => 'l',
        EntryKind::File => '-',
        EntryKind::Other => '?',
    };
    let mut perms = String::with_capacity(9);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        perms.push(if mode & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    let mut line = format!("{t}{perms} {:>12} {}", e.size, e.path);
    if let EntryKind::Symlink(target) = &e.kind {
        line.push_str(" -> ");
        line.push_str(target);
    }
    line
}

/// Checks that an ISO path is a plain relative path (no `..`, no absolute part) and returns its
/// destination under `dest`.
fn safe_join(dest: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(rel);
    let mut out = dest.to_path_buf();
    let mut n = 0;
    for c in p.components() {
        match c {
            Component::Normal(x) => {
                out.push(x);
                n += 1;
            }
            _ => bail!("refusing to extract {rel:?}: path escapes the destination"),
        }
    }
    if n == 0 {
        bail!("refusing to extract an entry with an empty path");
    }
    Ok(out)
}

/// Refuses to write through a symlink: every existing ancestor of `path` below `dest` must be a
/// real directory.
fn check_parents(dest: &Path, path: &Path) -> anyhow::Result<()> {
    let mut cur = path.parent();
    while let Some(p) = cur {
        if p == dest {
            break;
        }
        if let Ok(m) = fs::symlink_metadata(p) {
            if !m.is_dir() {
                bail!(
                    "refusing to extract {}: {} is not a directory",
                    path.display(),
                    p.display()
                );
            }
        }
        cur = p.parent();
    }
    Ok(())
}

/// Extracts every entry of `iso` into `dest`, which must not exist or be an empty directory.
/// Symlinks are created last and never followed; entries whose path would escape `dest` are
/// refused. The tree is extracted into a temp directory beside `dest` and renamed into place
/// whole, so a failed extraction leaves nothing in `dest`. Returns the number of entries.
pub fn extract(iso: &Path, dest: &Path) -> anyhow::Result<usize> {
    let dest_exists = match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {
            if fs::read_dir(dest)
                .with_context(|| format!("cannot list {}", dest.display()))?
                .next()
                .is_some()
            {
                bail!(
                    "refusing to extract into {}: it is not empty",
                    dest.display()
                );
            }
            true
        }
        Ok(_) => bail!(
            "refusing to extract into {}: it is not a directory",
            dest.display()
        ),
        Err(_) => false,
    };
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    // Created with `create_dir` (not a 0700 temp dir) so `dest` gets the usual umask mode.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = TempTree(parent.join(format!(
        "{}extract-{}-{nanos}",
        crate::fsutil::TEMP_PREFIX,
        std::process::id()
    )));
    fs::create_dir(&tmp.0).with_context(|| format!("cannot create {}", tmp.0.display()))?;
    // Errors name paths under `dest`, not under the temp directory.
    let n = extract_into(iso, &tmp.0).map_err(|e| {
        anyhow::anyhow!(
            format!("{e:#}").replace(&tmp.0.display().to_string(), &dest.display().to_string())
        )
    })?;
    if dest_exists {
        fs::remove_dir(dest).with_context(|| format!("cannot replace {}", dest.display()))?;
    }
    fs::rename(&tmp.0, dest).with_context(|| format!("cannot rename into {}", dest.display()))?;
    std::mem::forget(tmp);
    Ok(n)
}

/// A temp directory removed (with its content) when dropped.
struct TempTree(PathBuf);

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Extracts `iso` into the existing empty directory `dest`.
fn extract_into(iso: &Path, dest: &Path) -> anyhow::Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let mut reader = open_reader(iso)?;
    let entries = reader
        .walk()
        .with_context(|| format!("cannot list {}", iso.display()))?;
    let mut dir_modes = Vec::new();
    let mut links = Vec::new();
    for e in &entries {
        let path = safe_join(dest, &e.path)?;
        check_parents(dest, &path)?;
        match &e.kind {
            EntryKind::Dir => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => bail!(
                        "refusing to extract {}: exists and is not a directory",
                        path.display()
                    ),
                    Err(_) => fs::create_dir(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                }
                dir_modes.push((path, e.mode.unwrap_or(0o755) & 0o7777));
            }
            EntryKind::File => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                reader
                    .read_file(e, &mut f)
                    .with_context(|| format!("cannot extract {}", e.path))?;
                let mode = e.mode.unwrap_or(0o644) & 0o7777;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .with_context(|| format!("cannot chmod {}", path.display()))?;
            }
            EntryKind::Symlink(target) => links.push((path, target.clone())),
            EntryKind::Other => {
                eprintln!("skipping {} (special file)", e.path);
            }
        }
    }
    for (path, target) in links {
        check_parents(dest, &path)?;
        std::os::unix::fs::symlink(&target, &path)
            .with_context(|| format!("cannot create symlink {}", path.display()))?;
    }
    for (path, mode) in dir_modes.into_iter().rev() {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
    }
    Ok(entries.len())
}
