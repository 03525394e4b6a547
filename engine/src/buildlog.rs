//! `build.log`: the JSON log of the last run that did something.

use std::path::Path;

use anyhow::Result;

use super::run::RunSummary;

/// Writes `<build_root>/build.log` atomically.
pub(crate) fn write_build_log(
    build_root: &Path,
    started_at: u64,
    targets: &[String],
    summary: &RunSummary,
) -> Result<()> {
    let log = serde_json::json!({
        "started_at": started_at,
        "targets": targets,
        "result": if summary.ok { "success" } else { "failure" },
        "duration_s": summary.duration_s,
        "tasks": summary.tasks,
        "pruned": summary.pruned,
    });
    let bytes = serde_json::to_vec_pretty(&log)?;
    crate::fs::write_atomic(&build_root.join("build.log"), &bytes)
}
