//! Building `<name>-<version>.iso` from a Solution definition (SPEC §9 layout).
//!
//! Steps: images (local builds / pinned references, through [`crate::images::ImageBuilder`],
//! blobs hard-linked from the store so shared layers are stored once), the registry include
//! (`registry-config.inc.j2`), the operator deploy files, `manifest.yaml`, then a validation of
//! the tree and the ISO (`iso9660_writer::master`, MD5 implanted) written atomically, plus its line
//! in `SHA256SUM`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::definition::Definition;
use super::validate::{self, Report, API_VERSION};
use crate::fsutil;
use crate::images::inventory::Inventory;
use crate::images::ImageBuilder;
use crate::store::Store;

/// Annotation prefix of `manifest.yaml`.
pub const ANNOTATION_PREFIX: &str = "solutions.metalk8s.scality.com/";

/// Build-time facts recorded in `manifest.yaml`.
#[derive(Clone, Debug)]
pub struct BuildInfo {
    /// Unix time (`SOURCE_DATE_EPOCH`, else the last commit time, else 0).
    pub epoch: u64,
    /// Build host (`BUILD_HOST`, else `buildchain` with `SOURCE_DATE_EPOCH`, else the host name).
    pub host: String,
    /// Git revision of the definition directory (`unknown` outside git).
    pub git_revision: String,
    /// Signs `CONTENTS.json` (`BUILDCHAIN_SIGNING_KEY`); `None`: an unsigned build.
    pub signer: Option<std::sync::Arc<crate::trust::signing::SigningKey>>,
}

impl BuildInfo {
    /// Gathers the facts from the environment and git (`solution build` outside a checkout):
    /// `SOURCE_DATE_EPOCH`, and the signing key of `BUILDCHAIN_SIGNING_KEY` (passphrase from
    /// `BUILDCHAIN_SIGNING_PASSPHRASE_FILE`).
    pub fn detect(dir: &Path) -> Result<Self> {
        let mut info = Self::collect(crate::config::source_date_epoch_from_env()?, dir);
        if let Some(k) = std::env::var_os("BUILDCHAIN_SIGNING_KEY").filter(|v| !v.is_empty()) {
            let pass = std::env::var_os("BUILDCHAIN_SIGNING_PASSPHRASE_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from);
            info.signer = Some(std::sync::Arc::new(
                crate::trust::signing::SigningKey::load(Path::new(&k), pass.as_deref())
                    .context("BUILDCHAIN_SIGNING_KEY")?,
            ));
        }
        Ok(info)
    }

    /// The facts for a build with the settings' `SOURCE_DATE_EPOCH` (else the last commit time
    /// of `dir`, else 0), `BUILD_HOST` and the git revision of `dir`. Runs git: call it from a
    /// task action, not while the graph is built.
    pub fn collect(source_date_epoch: Option<u64>, dir: &Path) -> Self {
        let git = |args: &[&str]| -> Option<String> {
            let o = std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .output()
                .ok()?;
            o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let epoch = match source_date_epoch {
            Some(e) => e,
            None => git(&["log", "-1", "--format=%ct"])
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        };
        let host = crate::product::build_host(source_date_epoch.is_some());
        let git_revision = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
        BuildInfo {
            epoch,
            host,
            git_revision,
            signer: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: Spec,
}
#[derive(Serialize)]
struct Metadata {
    name: String,
    annotations: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}
#[derive(Serialize)]
struct Spec {
    version: String,
    images: Vec<String>,
    operator: Operator,
}
#[derive(Serialize)]
struct Operator {
    image: ImageRef,
}
#[derive(Serialize)]
struct ImageRef {
    name: String,
    tag: String,
}

/// `manifest.yaml` text for `version` (images sorted; every string PyYAML-safe).
pub fn manifest_yaml(def: &Definition, version: &str, info: &BuildInfo) -> Result<String> {
    let mut annotations = BTreeMap::new();
    let a = |k: &str| format!("{ANNOTATION_PREFIX}{k}");
    annotations.insert(a("display-name"), def.display_name.clone());
    annotations.insert(
        a("build-timestamp"),
        crate::images::local::rfc3339(info.epoch),
    );
    annotations.insert(a("build-host"), info.host.clone());
    annotations.insert(a("git-revision"), info.git_revision.clone());
    annotations.insert(
        a("development-release"),
        if version.contains('-') { "1" } else { "0" }.to_string(),
    );
    let mut images: Vec<String> = def
        .images
        .iter()
        .map(|i| {
            let e = def.entry(i, version);
            format!("{}:{}", e.name, e.tag)
        })
        .collect();
    images.sort();
    let op = def
        .images
        .iter()
        .find(|i| i.name == def.operator.image)
        .map(|i| def.entry(i, version))
        .context("operator image is not among the images")?;
    let doc = ManifestDoc {
        api_version: API_VERSION,
        kind: "Solution",
        metadata: Metadata {
            name: def.name.clone(),
            annotations,
            labels: def.labels.clone(),
        },
        spec: Spec {
            version: version.to_string(),
            images,
            operator: Operator {
                image: ImageRef {
                    name: op.name,
                    tag: op.tag,
                },
            },
        },
    };
    serde_saphyr::to_string(&doc).map_err(|e| anyhow::anyhow!("cannot emit manifest.yaml: {e}"))
}

fn yaml_docs(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let docs: Vec<Option<Value>> = serde_saphyr::from_multiple(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(docs.into_iter().flatten().collect())
}

/// Writes `operator/deploy/crds/*_crd.yaml` and `operator/deploy/role.yaml` under `root`.
fn write_operator(def: &Definition, dir: &Path, root: &Path) -> Result<()> {
    let deploy = root.join("operator").join("deploy");
    let crds = deploy.join("crds");
    std::fs::create_dir_all(&crds).with_context(|| format!("cannot create {}", crds.display()))?;
    let mut names = std::collections::BTreeSet::new();
    for f in &def.operator.crds {
        let src = dir.join(f);
        for (i, d) in yaml_docs(&src)?.iter().enumerate() {
            if d.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                bail!(
                    "{}: document {} is not a CustomResourceDefinition",
                    src.display(),
                    i + 1
                );
            }
        }
        let stem = Path::new(f)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = stem
            .trim_end_matches(".yaml")
            .trim_end_matches(".yml")
            .trim_end_matches("_crd");
        let name = format!("{stem}_crd.yaml");
        if !names.insert(name.clone()) {
            bail!("two CRD sources map to {name}");
        }
        let bytes =
            std::fs::read(&src).with_context(|| format!("cannot read {}", src.display()))?;
        fsutil::write_if_changed(&crds.join(&name), &bytes, Some(0o644))?;
    }
    let mut roles = Vec::new();
    for f in &def.operator.rbac {
        for d in yaml_docs(&dir.join(f))? {
            if matches!(
                d.get("kind").and_then(Value::as_str),
                Some("Role") | Some("ClusterRole")
            ) {
                roles.push(d);
            }
        }
    }
    let text = serde_saphyr::to_string_multiple(&roles)
        .map_err(|e| anyhow::anyhow!("cannot emit role.yaml: {e}"))?;
    fsutil::write_if_changed(&deploy.join("role.yaml"), text.as_bytes(), Some(0o644))?;
    Ok(())
}

/// Assembles the Solution tree of `version` in `root` (which must be empty or absent).
pub fn assemble(
    def: &Definition,
    dir: &Path,
    version: &str,
    root: &Path,
    store: &Store,
    info: &BuildInfo,
) -> Result<()> {
    let mut inv = Inventory {
        images: BTreeMap::new(),
        files: vec![dir.join(super::definition::DEFINITION_FILE)],
    };
    for i in &def.images {
        inv.images.insert(i.name.clone(), def.entry(i, version));
    }
    let builder = ImageBuilder::new(dir, store.clone(), inv, info.epoch);
    let images = root.join("images");
    for i in &def.images {
        builder
            .materialize(&i.name, &images, "", None)
            .with_context(|| format!("Solution {} {version}: image {}", def.name, i.name))?;
    }
    let inc =
        crate::registry_config::generate(&images, &crate::registry_config::Options::solution())
            .context("cannot generate registry-config.inc.j2")?;
    fsutil::write_if_changed(
        &root.join("registry-config.inc.j2"),
        inc.as_bytes(),
        Some(0o644),
    )?;
    write_operator(def, dir, root)?;
    let m = manifest_yaml(def, version, info)?;
    fsutil::write_if_changed(&root.join("manifest.yaml"), m.as_bytes(), Some(0o644))?;
    Ok(())
}

/// Writes `/sbom.spdx.json`, then `/CONTENTS.json` and (signed) `/CONTENTS.json.asc` into the
/// assembled tree `root`; returns the SBOM bytes.
pub fn write_trust_files(
    def: &Definition,
    version: &str,
    root: &Path,
    info: &BuildInfo,
) -> Result<Vec<u8>> {
    let hash = |p: &Path| fsutil::sha256_file(p);
    let images = crate::trust::index::scan_images(root)?;
    let name = format!("{}-{version}", def.name);
    let registry = format!("metalk8s-registry-from-config.invalid/{name}");
    let sbom = crate::trust::sbom::sbom_json(&crate::trust::sbom::SbomInput {
        name: &name,
        version,
        namespace: &def.name,
        registry: &registry,
        created: info.epoch,
        images: &images,
        rpms: &[],
    })?;
    fsutil::write_if_changed(&root.join("sbom.spdx.json"), &sbom, Some(0o644))?;
    let product = BTreeMap::from([
        ("display_name".to_string(), def.display_name.clone()),
        ("name".to_string(), def.name.clone()),
        ("version".to_string(), version.to_string()),
    ]);
    let index = crate::trust::index::build_index(root, product, Some(info.epoch), &hash)?;
    crate::trust::index::write_index(root, &index, info.signer.as_deref(), info.epoch)?;
    Ok(sbom)
}

/// One built ISO.
#[derive(Clone, Debug)]
pub struct Built {
    /// Path of the ISO.
    pub iso: PathBuf,
    /// Its sha256 (hex).
    pub sha256: String,
    /// The validation of the tree before mastering.
    pub report: Report,
}

/// Builds `<name>-<version>.iso` into `outdir`.
pub fn build_version(
    def: &Definition,
    dir: &Path,
    version: &str,
    outdir: &Path,
    store: &Store,
    info: &BuildInfo,
) -> Result<Built> {
    if !def.versions.iter().any(|v| v == version) {
        bail!(
            "version {version:?} is not defined (versions: {})",
            def.versions.join(", ")
        );
    }
    std::fs::create_dir_all(outdir)
        .with_context(|| format!("cannot create {}", outdir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(
            "{}{}-{version}.root.",
            fsutil::TEMP_PREFIX,
            def.name
        ))
        .tempdir_in(outdir)
        .with_context(|| format!("cannot create a temp dir in {}", outdir.display()))?;
    let root = tmp.path().join("root");
    assemble(def, dir, version, &root, store, info)?;
    let sbom = write_trust_files(def, version, &root, info)?;
    fsutil::write_if_changed(
        &outdir.join(format!("{}-{version}.spdx.json", def.name)),
        &sbom,
        Some(0o644),
    )?;
    let mut report = Report {
        source: root.display().to_string(),
        ..Report::default()
    };
    validate::check_tree(&mut super::tree::DirTree::new(&root), None, &mut report);
    if report.errors() > 0 {
        bail!(
            "the assembled Solution tree is invalid:\n{}",
            report.to_text()
        );
    }
    let iso = outdir.join(format!("{}-{version}.iso", def.name));
    let rep = crate::isofile::master_atomic(
        &root,
        &iso,
        &def.volume_id(version),
        true,
        info.epoch as i64,
        None,
    )?;
    update_sha256sum(outdir, &iso, &rep.sha256_hex)?;
    Ok(Built {
        iso,
        sha256: rep.sha256_hex,
        report,
    })
}

/// Sets the line of `iso` in `outdir/SHA256SUM` (`<hex>  <file name>`, sorted by file name).
pub fn update_sha256sum(outdir: &Path, iso: &Path, hex: &str) -> Result<()> {
    let file = outdir.join("SHA256SUM");
    let fname = iso
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut lines: BTreeMap<String, String> = BTreeMap::new();
    if let Ok(t) = std::fs::read_to_string(&file) {
        for l in t.lines() {
            if let Some((h, n)) = l.split_once("  ") {
                lines.insert(n.to_string(), h.to_string());
            }
        }
    }
    lines.insert(fname, hex.to_string());
    let text: String = lines.iter().map(|(n, h)| format!("{h}  {n}\n")).collect();
    fsutil::write_if_changed(&file, text.as_bytes(), Some(0o644))?;
    Ok(())
}

/// `buildchain solution build DIR [--version V] [-o OUTDIR]`: builds `version`, or every version.
pub fn build_cli(dir: &Path, version: Option<&str>, outdir: &Path) -> Result<Vec<Built>> {
    let def = Definition::load(dir)?;
    let info = BuildInfo::detect(dir)?;
    let store = Store::shared(Store::default_root())?;
    let versions: Vec<String> = match version {
        Some(v) => vec![v.to_string()],
        None => def.versions.clone(),
    };
    versions
        .iter()
        .map(|v| build_version(&def, dir, v, outdir, &store, &info))
        .collect()
}
