//! Delivering releases (issue 12): [`plan`] (what a build fetches and the predicted ISO size),
//! [`diff`] (two ISOs or trees compared), [`delta`] (delta ISOs that name their base).

pub mod delta;
pub mod diff;
pub mod plan;

use anyhow::Result;

use crate::config::Settings;
use crate::engine::Task;

/// `dist/<name>-<version>.delta.iso`.
pub fn delta_path(settings: &Settings) -> std::path::PathBuf {
    settings.dist_dir.join(format!(
        "{}-{}.delta.iso",
        settings.project_lower(),
        settings.version.full()
    ))
}

/// The `delta_iso` task, present when the `DELTA_BASE` setting names a base ISO: after `iso`,
/// writes the delta ISO of the new full ISO against that base next to it.
pub fn tasks(settings: &Settings) -> Result<Vec<Task>> {
    let Some(base) = settings
        .raw
        .get("DELTA_BASE")
        .filter(|b| !b.trim().is_empty())
    else {
        return Ok(Vec::new());
    };
    let base = settings.repo_root.join(base);
    let iso = settings.iso_path();
    let out = delta_path(settings);
    let (b, i, o) = (base.clone(), iso.clone(), out.clone());
    Ok(vec![Task::new("delta_iso")
        .public()
        .doc("Build dist/<name>-<version>.delta.iso against DELTA_BASE (after iso)")
        .dep("iso")
        .input_file(&base)
        .input_file(&iso)
        .output(&out)
        .action(move |_| delta::build(&b, &i, &o).map(|_| ()))])
}
