//! Tasks `packaging` and `packaging:*`.

use anyhow::Result;

use crate::config::Settings;
use crate::engine::Task;

/// Every `packaging:*` task plus the `packaging` group task that depends on all of them.
pub fn tasks(settings: &Settings) -> Result<Vec<Task>> {
    let _ = settings;
    Ok(vec![Task::new("packaging")
        .public()
        .doc("(not implemented yet)")])
}
