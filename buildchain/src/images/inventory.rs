//! The image inventory: `images/inventory.yaml` (default profile) plus `images/release.yaml`
//! (added by the release profile).
//!
//! ```yaml
//! images:
//!   - name: pause            # repository name on the ISO
//!     tag: "3.9"
//!     local: images/pause/   # exactly one of: registry | oci_layout | docker_archive | local
//!     tarball: true          # also write images/<name>-<tag>.tar (docker-archive)
//!     platform: linux/amd64  # default linux/amd64
//!   - name: etcd
//!     tag: 3.5.9-0
//!     registry: registry.k8s.io/etcd@sha256:…
//!     keep_index: false      # keep the multi-arch index (and every platform) instead of resolving
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::manifest::Platform;
use super::reference::{valid_repository, valid_tag, Reference};
use crate::config::Profile;

/// One inventory file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryFile {
    /// The images.
    pub images: Vec<ImageEntry>,
}

/// One inventory entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    /// Repository name on the ISO (`images/<name>/<tag>/`).
    pub name: String,
    /// Tag on the ISO.
    pub tag: String,
    /// `host/repo@sha256:…` (a tag alone is refused in the release profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// `path[:ref]` of an OCI image layout directory or tarball (relative to the repo root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_layout: Option<String>,
    /// Path of a `docker save` tarball (relative to the repo root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_archive: Option<String>,
    /// `images/<name>/`: a local build directory holding `image.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// Also write the docker-archive `images/<name>-<tag>.tar`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tarball: bool,
    /// `os/arch[/variant]`, default `linux/amd64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Keep a multi-arch index (and all its platforms) instead of resolving it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_index: bool,
}

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A registry reference.
    Registry(Reference),
    /// An OCI layout (directory or tar) and an optional ref name inside it.
    OciLayout {
        /// Directory or tarball.
        path: PathBuf,
        /// `org.opencontainers.image.ref.name` to select, if any.
        reference: Option<String>,
    },
    /// A docker-archive tarball.
    DockerArchive(PathBuf),
    /// A local build directory.
    Local(PathBuf),
}

impl ImageEntry {
    /// The entry's platform (default linux/amd64).
    pub fn platform(&self) -> Result<Platform> {
        match &self.platform {
            Some(p) => Platform::parse(p),
            None => Ok(Platform::default_linux_amd64()),
        }
    }

    /// The resolved source, with paths made absolute against `repo_root`.
    pub fn source(&self, repo_root: &Path) -> Result<Source> {
        let set: Vec<&str> = [
            self.registry.as_ref().map(|_| "registry"),
            self.oci_layout.as_ref().map(|_| "oci_layout"),
            self.docker_archive.as_ref().map(|_| "docker_archive"),
            self.local.as_ref().map(|_| "local"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if set.len() != 1 {
            bail!(
                "image {:?} must have exactly one source (registry, oci_layout, docker_archive or local), found {}",
                self.name,
                if set.is_empty() { "none".to_string() } else { set.join(", ") }
            );
        }
        if let Some(r) = &self.registry {
            return Ok(Source::Registry(Reference::parse(r)?));
        }
        if let Some(o) = &self.oci_layout {
            // `path:ref`, where ref has no `/`.
            let (path, reference) = match o.rsplit_once(':') {
                Some((p, r)) if !r.contains('/') && !r.is_empty() => (p, Some(r.to_string())),
                _ => (o.as_str(), None),
            };
            return Ok(Source::OciLayout {
                path: repo_root.join(path),
                reference,
            });
        }
        if let Some(d) = &self.docker_archive {
            return Ok(Source::DockerArchive(repo_root.join(d)));
        }
        let l = self.local.as_deref().unwrap_or_default();
        Ok(Source::Local(repo_root.join(l)))
    }

    /// The entry as canonical JSON (a task's value input).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The `base:` of a local build, if any.
    pub fn local_base(&self, repo_root: &Path) -> Result<Option<String>> {
        match self.source(repo_root)? {
            Source::Local(dir) => Ok(super::local::ImageDef::load(&dir)?.base),
            _ => Ok(None),
        }
    }
}

/// The inventory of a build (every file of the profile merged).
#[derive(Clone, Debug)]
pub struct Inventory {
    /// Entries sorted by name.
    pub images: BTreeMap<String, ImageEntry>,
    /// Files that were read (task inputs).
    pub files: Vec<PathBuf>,
}

/// Line (1-based) in `text` of the entry named `name`, for error messages.
fn line_of(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ").trim();
            t.strip_prefix("name:")
                .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'') == name)
                .unwrap_or(false)
        })
        .map(|i| i + 1)
}

/// Finds a key of a list entry indented differently from the entry's first key (a YAML parser
/// reports it on another line, or as a missing field): `line:col: …`.
fn misindented_key(text: &str) -> Option<String> {
    fn key_of(rest: &str) -> Option<&str> {
        let (k, _) = rest.split_once(':')?;
        (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(k)
    }
    // (dash column, key column, first key, its line, whether that key opens a nested block)
    let mut entry: Option<(usize, usize, String, usize)> = None;
    let mut prev_opens_block = false;
    for (i, line) in text.lines().enumerate() {
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if let Some(rest) = body.strip_prefix("- ") {
            let Some(k) = key_of(rest) else {
                entry = None;
                continue;
            };
            entry = Some((indent, indent + 2, k.to_string(), i + 1));
            prev_opens_block = rest.trim_end().ends_with(':');
            continue;
        }
        let Some((dash, col, first, first_line)) = &entry else {
            continue;
        };
        if indent <= *dash {
            entry = None;
            continue;
        }
        let Some(k) = key_of(body) else { continue };
        let wrong = (indent < *col) || (indent > *col && !prev_opens_block);
        if wrong {
            return Some(format!(
                "{}:{}: `{k}:` is indented by {indent} spaces, not {col} like `{first}:` on line \
                 {first_line}",
                i + 1,
                indent + 1
            ));
        }
        if indent == *col {
            let v = body[k.len() + 1..].trim();
            prev_opens_block = v.is_empty() || v == "|" || v == ">";
        }
    }
    None
}

impl Inventory {
    /// `images/inventory.yaml`, plus `images/release.yaml` for the release profile.
    pub fn files_for(repo_root: &Path, profile: Profile) -> Vec<PathBuf> {
        let mut v = vec![repo_root.join("images").join("inventory.yaml")];
        if profile == Profile::Release {
            v.push(repo_root.join("images").join("release.yaml"));
        }
        v
    }

    /// Loads and validates the inventory of `profile`.
    pub fn load(repo_root: &Path, profile: Profile) -> Result<Self> {
        let mut images = BTreeMap::new();
        let files = Self::files_for(repo_root, profile);
        for file in &files {
            let mut in_this_file = BTreeSet::new();
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read image inventory {}", file.display()))?;
            // Shown relative to the repository, as the user typed it.
            let shown = file
                .strip_prefix(repo_root)
                .unwrap_or(file)
                .display()
                .to_string();
            let parsed: InventoryFile = match crate::yamlerr::parse_yaml(&text, &shown) {
                Ok(p) => p,
                Err(e) => match misindented_key(&text) {
                    Some(m) => bail!("{shown}:{m}"),
                    None => return Err(e),
                },
            };
            for e in parsed.images {
                let at = || match line_of(&text, &e.name) {
                    Some(l) => format!("{shown}:{l}"),
                    None => shown.clone(),
                };
                Self::validate(repo_root, profile, &e).with_context(at)?;
                if !in_this_file.insert(e.name.clone()) {
                    bail!("{}: image {:?} is listed twice", at(), e.name);
                }
                // A later file (release.yaml) replaces an entry of an earlier one.
                images.insert(e.name.clone(), e);
            }
        }
        let inv = Inventory { images, files };
        inv.check_bases(repo_root)?;
        Ok(inv)
    }

    fn validate(repo_root: &Path, profile: Profile, e: &ImageEntry) -> Result<()> {
        if !valid_repository(&e.name) {
            bail!(
                "image name {:?} is not a valid repository name ([a-z0-9] with . _ - separators)",
                e.name
            );
        }
        if !valid_tag(&e.tag) {
            bail!("image {:?}: invalid tag {:?}", e.name, e.tag);
        }
        e.platform()
            .with_context(|| format!("image {:?}", e.name))?;
        match e.source(repo_root)? {
            Source::Registry(r) => {
                if r.digest.is_none() && profile == Profile::Release {
                    bail!("image {:?}: registry reference {:?} is not pinned by digest (`@sha256:…`), refused in the release profile", e.name, e.registry.as_deref().unwrap_or(""));
                }
            }
            Source::Local(dir) => {
                let expected = repo_root.join("images").join(&e.name);
                if dir.components().collect::<Vec<_>>() != expected.components().collect::<Vec<_>>()
                {
                    bail!(
                        "image {:?}: a local build must live in images/{}/, found {:?}",
                        e.name,
                        e.name,
                        e.local.as_deref().unwrap_or("")
                    );
                }
                if !dir.join("image.yaml").is_file() {
                    bail!(
                        "image {:?}: {} is missing",
                        e.name,
                        dir.join("image.yaml").display()
                    );
                }
            }
            Source::OciLayout { path, .. } | Source::DockerArchive(path) => {
                if !path.exists() {
                    bail!("image {:?}: {} does not exist", e.name, path.display());
                }
            }
        }
        Ok(())
    }

    fn check_bases(&self, repo_root: &Path) -> Result<()> {
        for name in self.images.keys() {
            let mut seen = BTreeSet::new();
            let mut cur = name.clone();
            loop {
                if !seen.insert(cur.clone()) {
                    bail!(
                        "image {name:?}: cycle in `base:` chain ({})",
                        seen.into_iter().collect::<Vec<_>>().join(" -> ")
                    );
                }
                let entry = &self.images[&cur];
                match entry.local_base(repo_root)? {
                    None => break,
                    Some(b) if self.images.contains_key(&b) => cur = b,
                    Some(b) => bail!("image {cur:?}: base image {b:?} is not in the inventory"),
                }
            }
        }
        Ok(())
    }
}
