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
    /// Verify the implanted MD5 (like `checkisomd5`).
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
            let r = crate::isofile::master_with_options(dir, output, &opts, true)?;
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
            let r = iso9660_writer::check(iso)
                .with_context(|| format!("cannot check {}", iso.display()))?;
            print!("{}", check_text(iso, &r));
            Ok(u8::from(r.status != CheckStatus::Pass))
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
        _ => s.push_str(
            "\nThe media check is complete, the result is: FAIL.\n\nIt is not recommended to use this media.\n",
        ),
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

/// Extracts every entry of `iso` under `dest` (created if missing); symlinks are created last
/// and never followed; entries whose path would escape `dest` are refused. Returns the number of
/// entries extracted.
pub fn extract(iso: &Path, dest: &Path) -> anyhow::Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let mut reader = open_reader(iso)?;
    let entries = reader
        .walk()
        .with_context(|| format!("cannot list {}", iso.display()))?;
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
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
