//! Packages: RPMs built from declarative definitions ([`spec`], [`build`]), pinned third-party
//! RPMs fetched from yum repositories ([`remote`], [`lock`]), and yum repodata written by us
//! ([`repodata`]).
//!
//! Layout in the ISO tree: `<iso_root>/packages/redhat/<major>/<project>-<repo>-el<major>/` holding
//! the RPMs, `repodata/` and optional `RPM-GPG-KEY-*` files.

pub mod build;
pub mod evr;
pub mod lock;
pub mod product;
pub mod remote;
pub mod repodata;
pub mod spec;

use std::path::{Path, PathBuf};

/// RHEL major version the product repositories target.
pub const DEFAULT_MAJOR: u32 = 8;

/// Repository a definition goes to when it names none.
pub const DEFAULT_REPOSITORY: &str = "scality";

/// `<project>-<repo>-el<major>` (`metalk8s-scality-el8`).
pub fn repo_dir_name(project_lower: &str, repo: &str, major: u32) -> String {
    format!("{project_lower}-{repo}-el{major}")
}

/// `<iso_root>/packages/redhat/<major>/<project>-<repo>-el<major>`.
pub fn repo_dir(iso_root: &Path, project_lower: &str, repo: &str, major: u32) -> PathBuf {
    iso_root
        .join("packages")
        .join("redhat")
        .join(major.to_string())
        .join(repo_dir_name(project_lower, repo, major))
}
