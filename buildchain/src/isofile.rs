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

/// [`master_atomic`] reporting to `progress`: its total is set to the image size once the layout
/// is known (not the sum of the file sizes: the image also holds metadata and padding), then it
/// counts image bytes written.
pub fn master_atomic_progress(
    dir: &Path,
    output: &Path,
    volid: &str,
    md5: bool,
    timestamp: i64,
    progress: &dyn crate::progress::Progress,
) -> Result<MasterReport> {
    let last = std::sync::atomic::AtomicU64::new(0);
    let on_progress = |done: u64| {
        let prev = last.swap(done, std::sync::atomic::Ordering::Relaxed);
        progress.inc(done.saturating_sub(prev));
    };
    let opts = iso9660_writer::MasterOptions {
        volume_id: volid.to_string(),
        timestamp,
        implant_md5: md5,
        progress: Some(&on_progress),
        keep_modes: false,
    };
    master_with_options(dir, output, &opts, true, &|total| progress.add_total(total))
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
    master_with_options(dir, output, &opts, durable, &|_| {})
}

/// Masters `dir` into `output` atomically with explicit writer options (e.g. `keep_modes` for
/// `iso master --keep-modes`; the default normalizes modes as `mkisofs -r`). `on_total` gets the
/// image size once the layout is known.
pub fn master_with_options(
    dir: &Path,
    output: &Path,
    opts: &iso9660_writer::MasterOptions,
    durable: bool,
    on_total: &dyn Fn(u64),
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
    let report = iso9660_writer::master_with_total(dir, out.file(), &opts, on_total)
        .with_context(|| format!("cannot master {} into {}", dir.display(), output.display()))?;
    out.set_mode(0o644)?;
    out.commit_with(durable)?;
    Ok(report)
}
