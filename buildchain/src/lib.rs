//! buildchain: an offline ISO build system and artifact pipeline.
//!
//! Layers (see `ARCHITECTURE.md`):
//! - [`engine`]: the generic build graph (tasks, up-to-date signatures, scheduler, reporting);
//!   it knows nothing about ISOs.
//! - format modules with small APIs: [`images`] (registries, OCI layouts, local builds),
//!   [`registry_config`] (static nginx registry), [`packaging`] (RPMs, yum repodata),
//!   [`solution`] (Solution ISOs), [`trust`] (content index, signatures, SBOM, verify), and the
//!   `iso9660-writer` crate.
//! - [`tasks`]: the product graph (`iso`, `populate_iso`, `images`, `packaging`, `salt_tree`)
//!   built from [`config::Settings`] and the repository content.
//! - [`cli`]: the thin command line shared by `buildchain` and `cargo xtask`.

pub mod cli;
pub mod config;
pub mod delivery;
pub use buildchain_engine as engine;
pub mod fsutil;
pub mod images;
pub mod isofile;
pub mod packaging;
pub mod product;
pub mod progress;
pub mod registry_config;
pub mod remote;
pub mod solution;
pub mod store;
pub mod tasks;
pub mod testhook;
pub mod trust;
pub mod yamlerr;
