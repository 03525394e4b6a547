//! `populate_iso`: everything under `_build/root` — scripts at the root, `product.txt`, the
//! Salt tree, images, packages — then, in this order, `/sbom.spdx.json`, the `/SHA256SUMS`
//! content manifest, the `/CONTENTS.json` content index and (signed builds) its signature.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use std::path::{Path, PathBuf};

use super::rel_name;
use crate::config::Settings;
use crate::engine::Task;
use crate::product::{self, PlatformVersions, ProductInfo};
use crate::trust::contents::{CONTENTS_FILE, CONTENTS_SIGNATURE_FILE};

/// The SBOM at the ISO root.
pub const SBOM_FILE: &str = "sbom.spdx.json";

/// `dist/<name>-<version>.spdx.json`: the SBOM beside the ISO.
pub fn sbom_dist_path(settings: &Settings) -> PathBuf {
    settings.iso_path().with_extension("spdx.json")
}

/// `populate_iso:*` tasks and the `populate_iso` group.
pub fn tasks(settings: &Settings) -> Result<Vec<Task>> {
    let mut out = Vec::new();
    let platform = PlatformVersions::load(&settings.repo_root)?;
    let ctx = product::template_context(settings, &platform);
    let ctx_json = serde_json::to_string(&ctx)?;

    // Scripts rendered from templates at the ISO root.
    let scripts_dir = settings.repo_root.join("salt").join("scripts");
    for src in crate::engine::signature::walk_tree(&scripts_dir)? {
        let rel = rel_name(&src, &scripts_dir);
        let Some(stem) = rel.strip_suffix(".in") else {
            anyhow::bail!("{}: scripts must be templates named `*.in`", src.display());
        };
        let dest = settings.iso_root.join(stem);
        let (s, d, c) = (src.clone(), dest.clone(), ctx.clone());
        let origin = rel_name(&src, &settings.repo_root);
        out.push(
            Task::new(format!("populate_iso:{stem}"))
                .doc(format!("Render {origin}"))
                .input_file(&src)
                .value("template context", ctx_json.clone())
                .output(&dest)
                .action(move |_| super::salt_tree::render_file(&s, &d, &c, &origin)),
        );
    }

    // product.txt: no wall-clock value input, so a no-op build never rewrites it; with
    // SOURCE_DATE_EPOCH the timestamp is an input and the file is byte-stable.
    let info = ProductInfo::collect(settings);
    let dest = settings.iso_root.join("product.txt");
    let sde = settings.source_date_epoch;
    let mut t = Task::new("populate_iso:product.txt")
        .doc("Write product.txt")
        .value("product", serde_json::to_string(&info)?)
        .output(&dest);
    // `git describe` runs in the action; a commit or a branch switch changes these files.
    for f in product::git_state_files(&settings.repo_root) {
        t = t.input_file(f);
    }
    let repo = settings.repo_root.clone();
    if let Some(e) = sde {
        t = t.value("SOURCE_DATE_EPOCH", e.to_string());
    }
    let d = dest.clone();
    out.push(t.action(move |_| {
        let ts = sde.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
        let text = info.clone().with_git(&repo).render(ts);
        crate::fsutil::write_if_changed(&d, text.as_bytes(), Some(0o644)).map(|_| ())
    }));

    let mut content_deps: Vec<String> = out.iter().map(|t| t.name.clone()).collect();
    content_deps.extend(["salt_tree", "images", "packaging"].map(String::from));

    let root = settings.iso_root.clone();
    let sums = root.join("SHA256SUMS");
    let sbom = root.join(SBOM_FILE);
    let contents = root.join(CONTENTS_FILE);
    let contents_asc = root.join(CONTENTS_SIGNATURE_FILE);
    let dist_sbom = sbom_dist_path(settings);
    let signer = settings.signer.clone();
    let signing = crate::trust::signing::describe(signer.as_deref());
    let created = settings.timestamp();

    // sbom.spdx.json (and its copy beside the ISO): every image and RPM of the tree.
    let (r, sb, dsb) = (root.clone(), sbom.clone(), dist_sbom.clone());
    let name = settings
        .iso_path()
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let version = settings.version.full();
    let namespace = settings.project_lower();
    let registry = crate::tasks::images::tarball_repo_prefix(settings)
        .trim_end_matches('/')
        .to_string();
    out.push(
        Task::new(format!("populate_iso:{SBOM_FILE}"))
            .doc("Write the SPDX SBOM of the ISO tree (/sbom.spdx.json and dist/)")
            .deps(content_deps.clone())
            .input_tree(settings.iso_root.join("images"))
            .input_tree(settings.iso_root.join("packages"))
            .value("created", created.to_string())
            .output(&sbom)
            .output(&dist_sbom)
            .action(move |ctx| {
                let hash = |p: &Path| ctx.sha256(p);
                let images = crate::trust::index::scan_images(&r)?;
                let listing = ctx.walk(&r)?;
                let rpms = crate::trust::index::scan_rpms_in(&r, &listing, &hash)?;
                let bytes = crate::trust::sbom::sbom_json(&crate::trust::sbom::SbomInput {
                    name: &name,
                    version: &version,
                    namespace: &namespace,
                    registry: &registry,
                    created,
                    images: &images,
                    rpms: &rpms,
                })?;
                crate::fsutil::write_if_changed(&sb, &bytes, Some(0o644))?;
                crate::fsutil::write_if_changed(&dsb, &bytes, Some(0o644))?;
                Ok(())
            }),
    );
    content_deps.push(format!("populate_iso:{SBOM_FILE}"));

    // SHA256SUMS: sha256 of every other regular file of the tree except the content index.
    let (r, s) = (root.clone(), sums.clone());
    let skip = [contents.clone(), contents_asc.clone()];
    out.push(
        Task::new("populate_iso:SHA256SUMS")
            .doc("Write the /SHA256SUMS content manifest of the ISO tree")
            .internal()
            .deps(content_deps.clone())
            .input_tree(&settings.iso_root)
            .exclude_input(&contents)
            .exclude_input(&contents_asc)
            .output(&sums)
            .action(move |ctx| {
                let mut text = String::new();
                let files = ctx.walk(&r)?;
                for f in files {
                    if f == s || skip.contains(&f) || !std::fs::symlink_metadata(&f)?.is_file() {
                        continue;
                    }
                    let hex = ctx
                        .sha256(&f)
                        .with_context(|| format!("cannot hash {}", f.display()))?;
                    let _ = writeln!(text, "{hex}  ./{}", rel_name(&f, &r));
                }
                crate::fsutil::write_if_changed(&s, text.as_bytes(), Some(0o644)).map(|_| ())
            }),
    );
    content_deps.push("populate_iso:SHA256SUMS".into());

    // CONTENTS.json: the content index (files, images, RPMs), then its signature.
    let (r, sde) = (root.clone(), settings.source_date_epoch);
    out.push(
        Task::new(format!("populate_iso:{CONTENTS_FILE}"))
            .doc("Write the /CONTENTS.json content index of the ISO tree")
            .deps(content_deps.clone())
            .input_tree(&settings.iso_root)
            .exclude_input(&contents_asc)
            .value("SOURCE_DATE_EPOCH", format!("{sde:?}"))
            .output(&contents)
            .action(move |ctx| {
                let hash = |p: &Path| ctx.sha256(p);
                let product = product::read_product_txt(&r.join("product.txt"))?;
                let listing = ctx.walk(&r)?;
                let index = crate::trust::index::build_index_in(&r, &listing, product, sde, &hash)?;
                let bytes = index
                    .to_json_bytes()
                    .context("cannot serialise CONTENTS.json")?;
                crate::fsutil::write_if_changed(&r.join(CONTENTS_FILE), &bytes, Some(0o644))
                    .map(|_| ())
            }),
    );
    content_deps.push(format!("populate_iso:{CONTENTS_FILE}"));
    match signer {
        Some(key) => {
            let c = contents.clone();
            out.push(
                Task::new(format!("populate_iso:{CONTENTS_SIGNATURE_FILE}"))
                    .doc("Sign /CONTENTS.json (detached, armored)")
                    .deps(content_deps.clone())
                    .input_file(&contents)
                    .value("signing key", signing)
                    .value("signature time", created.to_string())
                    .output(&contents_asc)
                    .action(move |_| {
                        let bytes = std::fs::read(&c)
                            .with_context(|| format!("cannot read {}", c.display()))?;
                        crate::trust::signing::write_detached(Some(&key), &c, &bytes, created)?;
                        Ok(())
                    }),
            );
            content_deps.push(format!("populate_iso:{CONTENTS_SIGNATURE_FILE}"));
        }
        None => {
            // An unsigned build says so, and leaves no stale signature behind.
            let c = contents.clone();
            out.push(
                Task::new("populate_iso:unsigned")
                    .doc("Unsigned build: no /CONTENTS.json.asc, no RPM or repodata signatures")
                    .deps(content_deps.clone())
                    .value("signing key", signing)
                    .action(move |ctx| {
                        crate::trust::signing::write_detached(None, &c, b"", 0)?;
                        ctx.note(
                            "unsigned build (set --signing-key or BUILDCHAIN_SIGNING_KEY to sign)",
                        );
                        Ok(())
                    }),
            );
            content_deps.push("populate_iso:unsigned".into());
        }
    }
    // The completeness gate must pass before the tree is final.
    content_deps.push("completeness".into());
    out.push(
        Task::new("populate_iso")
            .public()
            .doc("Populate the ISO tree (_build/root)")
            .deps(content_deps),
    );
    Ok(out)
}
