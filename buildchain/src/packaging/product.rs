//! The product's packages: which RPMs go to which repository, and the steps the `packaging:*`
//! tasks run (build one RPM, fetch the pins of a repository, write a repository's repodata).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::build::{self, Nevra};
use super::lock::{LockFile, LockedPackage};
use super::repodata::{self, RepodataOptions};
use super::spec::{self, LoadedDef, Vars};
use crate::config::{Profile, Settings};
use crate::store::Store;
use crate::trust::signing::SigningKey;

/// `repositories.yaml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoriesFile {
    /// Declared repositories.
    #[serde(default)]
    pub repositories: Vec<RepoDef>,
}

/// A declared repository.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoDef {
    /// Short name (`scality`).
    pub name: String,
    /// GPG public keys copied into the repository (relative to the packages directory).
    #[serde(default)]
    pub gpg_keys: Vec<String>,
}

/// Everything that decides what the packaging tasks produce.
#[derive(Clone, Debug)]
pub struct Product {
    /// `<repo_root>/packages/redhat/<major>`.
    pub packages_dir: PathBuf,
    /// RHEL major version.
    pub major: u32,
    /// Lower-cased project name.
    pub project: String,
    /// Full product version (`130.0.0-dev`).
    pub product_version: String,
    /// Timestamp of RPMs and repodata.
    pub source_date: u32,
    /// Whether the third-party lock is included (release profile).
    pub with_lock: bool,
    /// `<iso_root>`.
    pub iso_root: PathBuf,
    /// Signs the RPMs built here and every `repomd.xml` (`None`: unsigned build).
    pub signer: Option<Arc<SigningKey>>,
}

/// A package built here.
#[derive(Clone, Debug)]
pub struct PlannedPackage {
    /// Its definition.
    pub def: LoadedDef,
    /// Rendered NEVRA.
    pub nevra: Nevra,
    /// Product repository.
    pub repository: String,
}

/// A product repository.
#[derive(Clone, Debug, Default)]
pub struct PlannedRepo {
    /// Short name.
    pub name: String,
    /// GPG key files to copy in (absolute).
    pub gpg_keys: Vec<PathBuf>,
    /// Names of the packages built here that go in.
    pub built: Vec<String>,
    /// Pins that go in.
    pub locked: Vec<LockedPackage>,
}

impl PlannedRepo {
    /// RPM file names the repository must hold (sorted).
    pub fn rpm_files(&self, plan: &Plan) -> Vec<String> {
        let mut v: Vec<String> = self
            .built
            .iter()
            .filter_map(|n| plan.packages.get(n))
            .map(|p| p.nevra.file_name())
            .chain(self.locked.iter().map(LockedPackage::file_name))
            .collect();
        v.sort();
        v
    }
}

/// What the packaging tasks do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Packages built here, by name.
    pub packages: BTreeMap<String, PlannedPackage>,
    /// Repositories, by name.
    pub repos: BTreeMap<String, PlannedRepo>,
    /// The lock (release profile).
    pub lock: Option<LockFile>,
    /// Path of the lock file.
    pub lock_path: PathBuf,
}

impl Product {
    /// From the build settings (RHEL 8).
    pub fn from_settings(s: &Settings) -> Self {
        Product {
            packages_dir: s
                .repo_root
                .join("packages")
                .join("redhat")
                .join(super::DEFAULT_MAJOR.to_string()),
            major: super::DEFAULT_MAJOR,
            project: s.project_lower(),
            product_version: s.version.full(),
            source_date: s
                .source_date_epoch
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(build::DEFAULT_SOURCE_DATE),
            with_lock: s.profile == Profile::Release,
            iso_root: s.iso_root.clone(),
            signer: s.signer.clone(),
        }
    }

    /// Placeholder values; `{{ gpgcheck }}` is `1` in a signed build, else `0`.
    pub fn vars(&self) -> Vars {
        let mut v = Vars::new(&self.product_version, &self.project, self.major);
        v.set("gpgcheck", if self.signer.is_some() { "1" } else { "0" });
        v
    }

    /// `RPM-GPG-KEY-<project>`: the file name of the product key. In a signed build a key file
    /// of that name (in a repository or packaged) is the signing key's public key.
    pub fn product_key_name(&self) -> String {
        format!("RPM-GPG-KEY-{}", self.project)
    }

    /// The public key shipped as [`Self::product_key_name`] (signed builds only).
    pub fn product_public_key(&self) -> Result<Option<Vec<u8>>> {
        self.signer
            .as_ref()
            .map(|k| k.public_key_armored())
            .transpose()
    }

    /// Directory of repository `repo` in the ISO tree.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        super::repo_dir(&self.iso_root, &self.project, repo, self.major)
    }

    /// Reads definitions, repositories and (release) the lock.
    pub fn plan(&self) -> Result<Plan> {
        let vars = self.vars();
        let mut packages = BTreeMap::new();
        let mut repos: BTreeMap<String, PlannedRepo> = BTreeMap::new();
        let repos_path = self.packages_dir.join("repositories.yaml");
        let declared: RepositoriesFile = if repos_path.is_file() {
            crate::yamlerr::load_yaml(&repos_path)?
        } else {
            RepositoriesFile::default()
        };
        for r in &declared.repositories {
            let mut keys = Vec::new();
            for k in &r.gpg_keys {
                let p = self.packages_dir.join(k);
                if !p.is_file() {
                    bail!(
                        "{}: repository {}: GPG key {} not found",
                        repos_path.display(),
                        r.name,
                        p.display()
                    );
                }
                keys.push(p);
            }
            repos.insert(
                r.name.clone(),
                PlannedRepo {
                    name: r.name.clone(),
                    gpg_keys: keys,
                    ..Default::default()
                },
            );
        }
        for f in spec::definition_files(&self.packages_dir)? {
            let def = spec::load_definition(&f)?;
            let nevra = build::nevra(&def, &vars)?;
            let repository = def
                .def
                .repository
                .clone()
                .unwrap_or_else(|| super::DEFAULT_REPOSITORY.to_string());
            if let Some(prev) = packages.get(&def.def.name) {
                let prev: &PlannedPackage = prev;
                bail!(
                    "{}: package {} is already defined in {}",
                    f.display(),
                    def.def.name,
                    prev.def.path.display()
                );
            }
            repos
                .entry(repository.clone())
                .or_insert_with(|| PlannedRepo {
                    name: repository.clone(),
                    ..Default::default()
                })
                .built
                .push(def.def.name.clone());
            packages.insert(
                def.def.name.clone(),
                PlannedPackage {
                    def,
                    nevra,
                    repository,
                },
            );
        }
        let lock_path = self.packages_dir.join("lock.yaml");
        let lock = if self.with_lock {
            let l = LockFile::load(&lock_path)?;
            l.require_pinned(&lock_path)?;
            for p in &l.packages {
                let src = l.source(&p.source).expect("checked by LockFile::load");
                repos
                    .entry(src.repository.clone())
                    .or_insert_with(|| PlannedRepo {
                        name: src.repository.clone(),
                        ..Default::default()
                    })
                    .locked
                    .push(p.clone());
            }
            Some(l)
        } else {
            None
        };
        for r in repos.values() {
            let files = r.rpm_files(&Plan {
                packages: packages.clone(),
                repos: BTreeMap::new(),
                lock: None,
                lock_path: lock_path.clone(),
            });
            let mut seen = BTreeSet::new();
            for f in files {
                if !seen.insert(f.clone()) {
                    bail!(
                        "repository {}: two packages would be written as {f}",
                        r.name
                    );
                }
            }
        }
        Ok(Plan {
            packages,
            repos,
            lock,
            lock_path,
        })
    }

    /// Builds one package into its repository directory; returns the RPM path.
    pub fn build_rpm(&self, p: &PlannedPackage) -> Result<PathBuf> {
        let dest = self.repo_dir(&p.repository).join(p.nevra.file_name());
        let key = self.product_public_key()?;
        let swap = key.as_deref().map(|k| (self.product_key_name(), k));
        build::build_to_signed(
            &p.def,
            &self.vars(),
            self.source_date,
            &dest,
            self.signer.as_deref(),
            swap.as_ref().map(|(n, k)| (n.as_str(), *k)),
        )?;
        Ok(dest)
    }

    /// Makes sure the pins of repository `repo` are in the store and hard-linked into the
    /// repository directory; returns the RPM paths.
    pub fn fetch_repo(
        &self,
        plan: &Plan,
        repo: &str,
        store: &Store,
        on_progress: &mut dyn FnMut(&LockedPackage, u64),
    ) -> Result<(Vec<PathBuf>, super::lock::FetchStats)> {
        let Some(lock) = &plan.lock else {
            return Ok((Vec::new(), Default::default()));
        };
        let Some(r) = plan.repos.get(repo) else {
            bail!("no repository {repo}");
        };
        let (fetched, stats) = super::lock::fetch(lock, &r.locked, store, on_progress)
            .with_context(|| format!("{}", plan.lock_path.display()))?;
        let dir = self.repo_dir(repo);
        let mut out = Vec::new();
        for f in fetched {
            let dest = dir.join(f.package.file_name());
            store.materialize(&f.sha256, &dest)?;
            out.push(dest);
        }
        Ok((out, stats))
    }

    /// Finishes repository `repo`: removes RPMs and keys that no longer belong to it, copies its
    /// GPG keys, writes its repodata. Returns every file of the repository.
    pub fn assemble_repo(&self, plan: &Plan, repo: &str) -> Result<Vec<PathBuf>> {
        let Some(r) = plan.repos.get(repo) else {
            bail!("no repository {repo}");
        };
        let dir = self.repo_dir(repo);
        crate::fsutil::create_dir_all(&dir)?;
        let rpms = r.rpm_files(plan);
        let mut keys = BTreeSet::new();
        let mut files = Vec::new();
        for k in &r.gpg_keys {
            let name = k
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dest = dir.join(&name);
            let bytes = match self.product_public_key()? {
                Some(public) if name == self.product_key_name() => public,
                _ => std::fs::read(k).with_context(|| format!("cannot read {}", k.display()))?,
            };
            crate::fsutil::write_if_changed(&dest, &bytes, Some(0o644))?;
            keys.insert(name);
            files.push(dest);
        }
        for e in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = (name.ends_with(".rpm") && !rpms.contains(&name))
                || (name.starts_with("RPM-GPG-KEY-") && !keys.contains(&name));
            if stale && e.file_type()?.is_file() {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("cannot remove stale {}", e.path().display()))?;
            }
        }
        for f in &rpms {
            let p = dir.join(f);
            if !p.is_file() {
                bail!(
                    "repository {repo}: {} is missing (its rpm/fetch task did not run?)",
                    p.display()
                );
            }
            files.push(p);
        }
        let out = repodata::write_repodata_for(
            &dir,
            &rpms,
            &RepodataOptions {
                revision: u64::from(self.source_date),
                ..Default::default()
            },
        )?;
        files.extend(out.files);
        let repomd = dir.join("repodata").join("repomd.xml");
        let bytes =
            std::fs::read(&repomd).with_context(|| format!("cannot read {}", repomd.display()))?;
        if let Some(asc) = crate::trust::signing::write_detached(
            self.signer.as_deref(),
            &repomd,
            &bytes,
            u64::from(self.source_date),
        )? {
            files.push(asc);
        }
        Ok(files)
    }
}

/// Builds every package and repository of `product` directly (no task engine): what the
/// `packaging` task group produces. Returns every file written.
pub fn build_all(product: &Product, store: Option<&Store>) -> Result<Vec<PathBuf>> {
    let plan = product.plan()?;
    let mut files = Vec::new();
    for p in plan.packages.values() {
        product.build_rpm(p)?;
    }
    for name in plan.repos.keys() {
        if plan.lock.is_some() {
            let store = store.context("the release profile needs a store to fetch pins into")?;
            product.fetch_repo(&plan, name, store, &mut |_, _| {})?;
        }
        files.extend(product.assemble_repo(&plan, name)?);
    }
    Ok(files)
}
