//! YAML loading with errors that name `file:line:column`.

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// Reads and deserialises a YAML file; the error names the file (serde-saphyr reports line and
/// column in its message).
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_yaml(&text, &path.display().to_string())
}

/// Deserialises YAML text; `origin` names the file in errors.
pub fn parse_yaml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
}
