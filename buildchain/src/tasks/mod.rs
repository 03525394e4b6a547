//! The product graph: `iso` ← `populate_iso` ← {`images`, `packaging`, `salt_tree`, scripts,
//! `product.txt`, `SHA256SUMS`}.

pub mod completeness;
pub mod images;
pub mod iso;
pub mod packaging;
pub mod populate;
pub mod salt_tree;
pub mod solutions;

use std::path::Path;

use anyhow::{Context, Result};

use crate::config::Settings;
use crate::engine::Graph;

/// Builds the whole product graph from the settings and the repository content.
pub fn build_graph(settings: &Settings) -> Result<Graph> {
    let mut g = Graph::new();
    // Images and packages first: `salt_tree` (versions.json) reads the inventory and the
    // package definitions again, so their errors are reported under their own task.
    g.extend(images::tasks(settings).context("images")?)?;
    g.extend(packaging::tasks(settings).context("packaging")?)?;
    g.extend(salt_tree::tasks(settings).context("salt_tree")?)?;
    g.extend(completeness::tasks(settings).context("completeness")?)?;
    g.extend(populate::tasks(settings).context("populate_iso")?)?;
    g.extend(iso::tasks(settings).context("iso")?)?;
    g.extend(solutions::tasks(settings).context("solutions")?)?;
    g.extend(crate::delivery::tasks(settings).context("delta")?)?;
    Ok(g)
}

/// Copies `src` to `dest` unless identical (mode normalised to 0644, or 0755 if executable).
pub fn copy_file_if_changed(src: &Path, dest: &Path) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let bytes = std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
    let mode = std::fs::metadata(src)?.permissions().mode();
    let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
    crate::fsutil::write_if_changed(dest, &bytes, Some(mode))
}

/// Task-name-safe relative path (`/`-separated).
pub fn rel_name(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}
