//! `iso`: masters `_build/root` into `dist/<name>-<version>.iso`.

use anyhow::Result;

use crate::config::Settings;
use crate::engine::Task;

/// The `iso` task(s).
pub fn tasks(settings: &Settings) -> Result<Vec<Task>> {
    let _ = settings;
    Ok(vec![Task::new("iso")
        .public()
        .doc("Build the ISO (the ISO writer is not merged yet: stops at populate_iso)")
        .dep("populate_iso")])
}
