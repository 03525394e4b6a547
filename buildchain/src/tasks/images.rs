//! Tasks `images` and `images:*`.

use anyhow::Result;

use crate::config::Settings;
use crate::engine::Task;

/// Every `images:*` task plus the `images` group task that depends on all of them.
pub fn tasks(settings: &Settings) -> Result<Vec<Task>> {
    let _ = settings;
    Ok(vec![Task::new("images")
        .public()
        .doc("(not implemented yet)")])
}

/// Name → version of what this area ships, for `versions.json`.
pub fn versions(settings: &Settings) -> Result<std::collections::BTreeMap<String, String>> {
    let _ = settings;
    Ok(Default::default())
}
