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
    let state = resume_state_path(dir, output);
    master_resumable(dir, output, &opts, state.as_deref(), &|total| {
        progress.add_total(total)
    })
}

/// Where the [`iso9660_writer::ResumeState`] of `output` is kept: in the build root (the parent
/// of the ISO tree `dir`), named after the ISO.
fn resume_state_path(dir: &Path, output: &Path) -> Option<std::path::PathBuf> {
    let name = output.file_name()?.to_str()?;
    Some(dir.parent()?.join(format!(".{name}.resume")))
}

/// [`master_with_options`] (durable), reusing the stable prefix of the ISO already at `output`
/// when the resume state at `state` describes it (an incremental re-master: same bytes as a
/// full one); then records the new state there. The previous ISO stays intact until the new
/// one replaces it.
pub fn master_resumable(
    dir: &Path,
    output: &Path,
    opts: &iso9660_writer::MasterOptions,
    state: Option<&Path>,
    on_total: &dyn Fn(u64),
) -> Result<MasterReport> {
    let Some(state_path) = state else {
        return master_with_options(dir, output, opts, true, on_total);
    };
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
    let prev_state = std::fs::read_to_string(state_path)
        .ok()
        .and_then(|t| iso9660_writer::ResumeState::parse(&t));
    let prev_image = std::fs::File::open(output).ok();
    let previous = match (&prev_image, &prev_state) {
        (Some(image), Some(state)) => Some(iso9660_writer::Previous { image, state }),
        _ => None,
    };
    // A state left from an interrupted run must not outlive the image it describes.
    let _ = std::fs::remove_file(state_path);
    let mut out = crate::fsutil::AtomicFile::create(output)?;
    let (report, next) =
        iso9660_writer::master_resuming(dir, out.file(), &opts, previous, on_total).with_context(
            || format!("cannot master {} into {}", dir.display(), output.display()),
        )?;
    drop(prev_image);
    out.set_mode(0o644)?;
    out.commit_with(true)?;
    if let Some(next) = next {
        let meta = std::fs::metadata(output)
            .with_context(|| format!("cannot stat {}", output.display()))?;
        crate::fsutil::write_if_changed(
            state_path,
            next.bind(&meta).to_text().as_bytes(),
            Some(0o644),
        )?;
    }
    Ok(report)
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
