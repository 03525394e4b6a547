//! Static registry: nginx `location` blocks that serve an `images/` tree as an OCI registry.
//! (Being implemented: see issue 5.)

pub mod cli;

use std::path::Path;

/// Which part of the configuration to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Constants {
    /// Constants, then per-image blocks.
    Include,
    /// Per-image blocks only.
    Omit,
    /// Constants only.
    Only,
}

/// Generation options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Repository name prefix, e.g. `metalk8s-130.0.0-dev/` or `{{ repository }}/`.
    pub name_prefix: String,
    /// Server root expression, e.g. `$metalk8s_130_0_0_dev_images` or `{{ registry_root }}`.
    pub server_root: String,
    /// Constants handling.
    pub constants: Constants,
}

/// Generates the nginx include for the images under `images_dir`.
pub fn generate(images_dir: &Path, options: &Options) -> anyhow::Result<String> {
    let _ = (images_dir, options);
    anyhow::bail!("registry-config generation is not implemented yet")
}
