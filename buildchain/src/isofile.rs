//! Mastering a directory into an ISO file, atomically: the one place the CLI (`iso master`), the
//! `iso` task and Solution builds go through to call `iso9660-writer`.

use std::path::Path;

use anyhow::{Context, Result};
use iso9660_writer::MasterReport;

/// Masters `dir` into `output` atomically (temp file beside it, fsync, rename); the file is left
/// mode 0644. `progress` receives the number of image bytes written so far.
pub fn master_atomic(
    dir: &Path,
    output: &Path,
    volid: &str,
    md5: bool,
    timestamp: i64,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<MasterReport> {
    master_to(dir, output, volid, md5, timestamp, progress, true)
}

/// Like [`master_atomic`]; with `durable = false` the temp file is renamed into place without
/// fsync (what `xorriso`/`genisoimage` do; the benchmark uses it to compare like with like).
pub fn master_to(
    dir: &Path,
    output: &Path,
    volid: &str,
    md5: bool,
    timestamp: i64,
    progress: Option<&(dyn Fn(u64) + Sync)>,
    durable: bool,
) -> Result<MasterReport> {
    let opts = iso9660_writer::MasterOptions {
        volume_id: volid.to_string(),
        timestamp,
        implant_md5: md5,
        progress,
        keep_modes: false,
    };
    master_with_options(dir, output, &opts, durable)
}

/// Masters `dir` into `output` atomically with explicit writer options (e.g. `keep_modes` for
/// `iso master --keep-modes`; the default normalizes modes as `mkisofs -r`).
pub fn master_with_options(
    dir: &Path,
    output: &Path,
    opts: &iso9660_writer::MasterOptions,
    durable: bool,
) -> Result<MasterReport> {
    // Every progress report is also a crash point of the fault tests (inert otherwise).
    let caller_progress = opts.progress;
    let report_progress = |n: u64| {
        crate::testhook::kill_point("master");
        if let Some(p) = caller_progress {
            p(n);
        }
    };
    let opts = iso9660_writer::MasterOptions {
        volume_id: opts.volume_id.clone(),
        timestamp: opts.timestamp,
        implant_md5: opts.implant_md5,
        progress: Some(&report_progress),
        keep_modes: opts.keep_modes,
    };
    let mut out = crate::fsutil::AtomicFile::create(output)?;
    let report = iso9660_writer::master(dir, out.file(), &opts)
        .with_context(|| format!("cannot master {} into {}", dir.display(), output.display()))?;
    out.set_mode(0o644)?;
    out.commit_with(durable)?;
    Ok(report)
}
