//! Solution definitions: `solutions/<name>/solution.yaml`.
//!
//! ```yaml
//! name: example-solution              # DNS-1123 label (metadata.name)
//! display_name: Example Solution      # volume id "<display name> <version>"
//! versions: ["1.0.0", "1.1.0"]
//! operator:
//!   image: example-solution-operator  # one of `images` (tag = the version)
//!   crds: [operator/crds/example.yaml]          # CustomResourceDefinition sources
//!   rbac: [operator/rbac/role.yaml]             # only Role / ClusterRole documents are kept
//! images:
//!   - name: base-server
//!     local: images/base-server        # a local build (images/<dir>/image.yaml, see
//!                                      # `buildchain::images::local`); `{version}` is replaced
//!   - name: example-solution-operator
//!     local: "images/operator-{version}"
//!   - name: alpine
//!     tag: "3.20"                      # pinned references need a tag (default: the version)
//!     registry: docker.io/library/alpine@sha256:…
//! labels: {}                           # metadata.labels of manifest.yaml
//! ```
//!
//! Paths are relative to the definition directory. Unknown fields are errors, reported with
//! `file:line:column`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::validate::{is_dns1123_label, is_semver};
use crate::images::inventory::ImageEntry;

/// File name of a definition.
pub const DEFINITION_FILE: &str = "solution.yaml";

/// `solution.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// `metadata.name` (DNS-1123 label).
    pub name: String,
    /// Display name (annotation and volume id).
    pub display_name: String,
    /// Versions that can be built.
    pub versions: Vec<String>,
    /// The operator.
    pub operator: OperatorDef,
    /// Images shipped (the operator image among them).
    pub images: Vec<ImageDef>,
    /// `metadata.labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The operator part.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorDef {
    /// Name of the operator image (one of `images`).
    pub image: String,
    /// CRD source files.
    #[serde(default)]
    pub crds: Vec<String>,
    /// RBAC source files (multi-document YAML).
    #[serde(default)]
    pub rbac: Vec<String>,
}

/// One image.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDef {
    /// Repository name.
    pub name: String,
    /// Tag (default: the Solution version; required for `registry` references).
    #[serde(default)]
    pub tag: Option<String>,
    /// Local build directory (`{version}` is replaced).
    #[serde(default)]
    pub local: Option<String>,
    /// Pinned registry reference `host/repo@sha256:…`.
    #[serde(default)]
    pub registry: Option<String>,
    /// OCI layout `path[:ref]`.
    #[serde(default)]
    pub oci_layout: Option<String>,
    /// `docker save` tarball.
    #[serde(default)]
    pub docker_archive: Option<String>,
    /// `os/arch[/variant]`.
    #[serde(default)]
    pub platform: Option<String>,
}

impl Definition {
    /// Loads and checks `<dir>/solution.yaml`.
    pub fn load(dir: &Path) -> Result<Self> {
        let file = dir.join(DEFINITION_FILE);
        let d: Definition = crate::yamlerr::load_yaml(&file)?;
        d.check(dir)
            .with_context(|| format!("{}", file.display()))?;
        Ok(d)
    }

    fn check(&self, dir: &Path) -> Result<()> {
        if !is_dns1123_label(&self.name) {
            bail!("name {:?} is not a DNS-1123 label (at most 63 characters of [0-9a-z-], no leading or trailing -)", self.name);
        }
        if self.display_name.trim().is_empty() || self.display_name.contains(['\n', '\r']) {
            bail!("display_name must be a non-empty single line");
        }
        if self.versions.is_empty() {
            bail!("versions is empty");
        }
        for v in &self.versions {
            if !is_semver(v) {
                bail!("version {v:?} is not MAJOR.MINOR.PATCH[-pre][+build]");
            }
            let vol = self.volume_id(v);
            if vol.len() > 32 {
                bail!("volume id {vol:?} is longer than 32 bytes: shorten display_name");
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for i in &self.images {
            if !seen.insert(&i.name) {
                bail!("image {:?} is listed twice", i.name);
            }
            let e = self.entry(i, &self.versions[0]);
            e.source(dir)
                .with_context(|| format!("image {:?}", i.name))?;
            if i.tag.is_none() && i.local.is_none() {
                bail!("image {:?}: a pinned image needs a `tag`", i.name);
            }
        }
        if !self.images.iter().any(|i| i.name == self.operator.image) {
            bail!(
                "operator.image {:?} is not one of `images`",
                self.operator.image
            );
        }
        for f in self.operator.crds.iter().chain(&self.operator.rbac) {
            let p = dir.join(f);
            if !p.is_file() {
                bail!("operator file {} does not exist", p.display());
            }
        }
        Ok(())
    }

    /// `"<display name> <version>"`.
    pub fn volume_id(&self, version: &str) -> String {
        format!("{} {version}", self.display_name)
    }

    /// The inventory entry of `image` for `version`.
    pub fn entry(&self, image: &ImageDef, version: &str) -> ImageEntry {
        let sub = |s: &Option<String>| s.as_ref().map(|s| s.replace("{version}", version));
        ImageEntry {
            name: image.name.clone(),
            tag: image.tag.clone().unwrap_or_else(|| version.to_string()),
            registry: sub(&image.registry),
            oci_layout: sub(&image.oci_layout),
            docker_archive: sub(&image.docker_archive),
            local: sub(&image.local),
            tarball: false,
            platform: image.platform.clone(),
            keep_index: false,
        }
    }

    /// Every source file and directory of the definition for `version` (for change tracking).
    pub fn inputs(&self, dir: &Path, version: &str) -> Vec<PathBuf> {
        let mut v = vec![dir.join(DEFINITION_FILE)];
        for i in &self.images {
            if let Some(l) = &self.entry(i, version).local {
                v.push(dir.join(l));
            }
        }
        v.extend(self.operator.crds.iter().map(|f| dir.join(f)));
        v.extend(self.operator.rbac.iter().map(|f| dir.join(f)));
        v
    }
}
