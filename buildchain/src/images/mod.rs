//! Container images (SPEC §5): inventory, registry client, OCI layout / docker-archive sources,
//! local builds without Docker, the content-addressed store and the `dir:` layout on the ISO.
//!
//! Entry points:
//! - [`inventory::Inventory::load`] reads `images/inventory.yaml` (+ `images/release.yaml`);
//! - [`ImageBuilder::materialize`] puts one inventory image into `<iso_root>/images/` (fetching or
//!   building its blobs into the [`Store`] first, hard-linking them into the tree);
//! - [`registry::RegistryClient`] + [`registry::fetch_many`] for registry pulls;
//! - [`local::build`] for local builds; [`layout`] for the on-disk formats.

pub mod inventory;
pub mod layout;
pub mod local;
pub mod manifest;
pub mod reference;
pub mod registry;
mod tarball;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};

use crate::progress::Progress;
use crate::store::Store;
use inventory::{Inventory, Source};
use manifest::Descriptor;
use registry::{ClientOptions, RegistryClient};

/// One image manifest with its blobs.
#[derive(Clone, Debug)]
pub struct ImageData {
    /// sha256 hex of the manifest bytes.
    pub hex: String,
    /// The exact manifest bytes.
    pub bytes: Vec<u8>,
    /// Config blob.
    pub config: Descriptor,
    /// Layer blobs.
    pub layers: Vec<Descriptor>,
}

/// A resolved image: the manifest written as `manifest.json` (an image manifest, or an index
/// when kept) and the image manifests it covers. Every manifest is in the store.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// sha256 hex of `top_bytes`.
    pub top_hex: String,
    /// Bytes of `manifest.json`.
    pub top_bytes: Vec<u8>,
    /// Media type of `top_bytes`.
    pub media_type: String,
    /// Image manifests (one unless an index is kept).
    pub instances: Vec<ImageData>,
}

impl Resolved {
    /// `sha256:<hex>` of `manifest.json`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.top_hex)
    }
}

/// Builds, imports or fetches inventory images into the store and the ISO tree.
pub struct ImageBuilder {
    /// Repository root.
    pub repo_root: PathBuf,
    /// The blob store.
    pub store: Store,
    /// The inventory.
    pub inventory: Inventory,
    /// Timestamp for local builds and tarballs (`SOURCE_DATE_EPOCH`, else 0).
    pub epoch: u64,
    /// Registry client options.
    pub client_options: ClientOptions,
    client: OnceLock<std::result::Result<RegistryClient, String>>,
    cache: Mutex<HashMap<String, Resolved>>,
}

impl ImageBuilder {
    /// A builder for `inventory`.
    pub fn new(repo_root: &Path, store: Store, inventory: Inventory, epoch: u64) -> Self {
        ImageBuilder {
            repo_root: repo_root.to_path_buf(),
            store,
            inventory,
            epoch,
            client_options: ClientOptions::default(),
            client: OnceLock::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The registry client (created on first use).
    pub fn client(&self) -> Result<&RegistryClient> {
        self.client
            .get_or_init(|| {
                RegistryClient::new(self.client_options.clone()).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Makes every blob of inventory image `name` present in the store and returns its
    /// manifests. Registry images pinned by digest whose blobs are all stored need no network.
    pub fn resolve(&self, name: &str, progress: Option<&dyn Progress>) -> Result<Resolved> {
        if let Some(r) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(r.clone());
        }
        let entry = self
            .inventory
            .images
            .get(name)
            .with_context(|| format!("image {name:?} is not in the inventory"))?;
        let what = format!("image {name}:{}", entry.tag);
        let platform = entry.platform()?;
        let res = match entry.source(&self.repo_root)? {
            Source::Registry(r) => {
                let what = format!("{what} ({r})");
                let client = self.client()?;
                let res = client
                    .resolve(&self.store, &r, &platform, entry.keep_index, &what)
                    .with_context(|| format!("cannot fetch from registry {}", r.registry))?;
                client
                    .fetch_image_blobs(&self.store, &r, &res, &what, progress)
                    .with_context(|| format!("cannot fetch from registry {}", r.registry))?;
                res
            }
            Source::OciLayout { path, reference } => layout::import_oci_layout(
                &self.store,
                &path,
                reference.as_deref(),
                &platform,
                entry.keep_index,
                &what,
            )?,
            Source::DockerArchive(path) => {
                layout::import_docker_archive(&self.store, &path, &what)?
            }
            Source::Local(dir) => local::build(
                name,
                &dir,
                &self.repo_root,
                &self.store,
                self.epoch,
                &platform,
                &|base| self.resolve(base, progress),
            )
            .with_context(|| format!("{what}: local build in {}", dir.display()))?,
        };
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), res.clone());
        Ok(res)
    }

    /// Writes inventory image `name` under `images_root` (`<iso_root>/images`):
    /// `<name>/<tag>/` in the `dir:` layout and, for `tarball: true`, `<name>-<tag>.tar` tagged
    /// `<repo_prefix><name>:<tag>`. Returns every file written (for the engine's outputs).
    /// `<name>/<tag>/` is owned by the caller: one left partial by a crash is replaced whole
    /// ([`layout::replace_dir_layout`]).
    pub fn materialize(
        &self,
        name: &str,
        images_root: &Path,
        repo_prefix: &str,
        progress: Option<&dyn Progress>,
    ) -> Result<Vec<PathBuf>> {
        let entry = self
            .inventory
            .images
            .get(name)
            .with_context(|| format!("image {name:?} is not in the inventory"))?;
        let res = self.resolve(name, progress)?;
        let dest = images_root.join(name).join(&entry.tag);
        let mut files =
            layout::replace_dir_layout(&self.store, &res, &dest).with_context(|| {
                format!(
                    "image {name}:{}: cannot write {}",
                    entry.tag,
                    dest.display()
                )
            })?;
        if entry.tarball {
            let tar = images_root.join(format!("{name}-{}.tar", entry.tag));
            // A kept index: the tarball holds the image of the entry's platform.
            let single = if res.instances.len() != 1 || res.instances[0].hex != res.top_hex {
                layout::resolve_from_store(
                    &self.store,
                    &res.top_hex,
                    &entry.platform()?,
                    false,
                    &format!("image {name}:{}", entry.tag),
                )?
            } else {
                res.clone()
            };
            layout::write_docker_archive(
                &self.store,
                &single,
                &format!("{repo_prefix}{name}:{}", entry.tag),
                &tar,
                self.epoch,
            )
            .with_context(|| {
                format!("image {name}:{}: cannot write {}", entry.tag, tar.display())
            })?;
            files.push(tar);
        }
        Ok(files)
    }
}
