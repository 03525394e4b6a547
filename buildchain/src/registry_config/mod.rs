//! Static registry: nginx `location` blocks that serve an `images/` tree (skopeo `dir:` layout)
//! as a read-only OCI distribution / Docker Registry v2 API, with stock nginx and no daemon.
//!
//! What is served (SPEC §6):
//! - constants (unless [`Constants::Omit`]): `/v2` and `/v2/` → 200 `{}` (JSON, no HTML
//!   redirect page); any other `/v2/…` → 404 `NAME_UNKNOWN`;
//! - per image name: `tags/list` (sorted tags), manifests by tag and by digest (index children
//!   included) with `Content-Type` = the manifest media type and `Docker-Content-Digest` = sha256
//!   of the exact file, blobs by digest (`application/octet-stream` + digest header) mapped to one
//!   concrete file wherever it is stored in the tree, and 404 `MANIFEST_UNKNOWN` /
//!   `BLOB_UNKNOWN` JSON errors for unknown references of a known name;
//! - read-only semantics: every method but GET/HEAD, and the push endpoint `blobs/uploads/`,
//!   get 405 with a JSON `UNSUPPORTED` error and `Allow: GET, HEAD` (never an HTML page);
//! - every response under `/v2` carries `Docker-Distribution-API-Version: registry/2.0`.
//!
//! Only exact (`=`) and prefix (`^~`) locations are emitted — no regex, no `try_files` scan —
//! so the result does not depend on the order in which nginx includes several such files. HEAD
//! is answered by nginx for all of them. Names and tags are validated against the OCI grammar
//! and media types restricted to the four manifest types, so nothing from the tree can inject
//! nginx directives or Jinja statements. Output is sorted: same tree, same bytes.
//!
//! Layout of the tree and multi-arch handling: see [`tree`].

pub mod grammar;
pub mod manifest;
pub mod render;
pub mod serve;
pub mod synthetic;
pub mod tree;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Result};

pub use grammar::metalk8s_server_root;

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
    /// Repository name prefix, e.g. `metalk8s-130.0.0-dev/` or `{{ repository }}/` (a missing
    /// trailing `/` is added; empty means no prefix).
    pub name_prefix: String,
    /// Server root expression: an nginx variable (`$metalk8s_130_0_0_dev_images`), a Jinja
    /// placeholder (`{{ registry_root }}`) or an absolute path; files are addressed as
    /// `<root>/<name>/<tag>/<file>`.
    pub server_root: String,
    /// Constants handling.
    pub constants: Constants,
}

impl Options {
    /// Options for the MetalK8s product include of `version`: prefix `metalk8s-<version>/`,
    /// root `$metalk8s_<version with . and - as _>_images`, no constants.
    pub fn metalk8s(version: &str) -> Self {
        Options {
            name_prefix: format!("metalk8s-{version}/"),
            server_root: metalk8s_server_root(version),
            constants: Constants::Omit,
        }
    }
    /// Options for a Solution's `registry-config.inc.j2`: Jinja placeholders, no constants.
    pub fn solution() -> Self {
        Options {
            name_prefix: "{{ repository }}/".to_string(),
            server_root: "{{ registry_root }}".to_string(),
            constants: Constants::Omit,
        }
    }
}

/// Generates the nginx include for the images under `images_dir` (not read at all with
/// [`Constants::Only`]).
///
/// Errors name the offending path: invalid name/tag, unreadable or unsupported manifest, blob or
/// child manifest missing from the tree, size or digest mismatch.
pub fn generate(images_dir: &Path, options: &Options) -> Result<String> {
    let prefix = grammar::normalize_prefix(&options.name_prefix)
        .map_err(|e| anyhow!("invalid name prefix {:?}: {e}", options.name_prefix))?;
    let root = grammar::normalize_server_root(&options.server_root)
        .map_err(|e| anyhow!("invalid server root {:?}: {e}", options.server_root))?;
    let repos = if options.constants == Constants::Only {
        BTreeMap::new()
    } else {
        tree::load(images_dir)?
    };
    if !prefix.contains("{{") {
        if let Some(name) = repos
            .keys()
            .find(|n| prefix.len() + n.len() > grammar::MAX_NAME_LEN)
        {
            bail!(
                "image name {prefix}{name} is longer than {} characters",
                grammar::MAX_NAME_LEN
            );
        }
    }
    Ok(render::render(&prefix, &root, &repos, options.constants))
}
