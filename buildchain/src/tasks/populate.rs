//! `populate_iso`: everything under `_build/root` — scripts at the root, `product.txt`, the
//! Salt tree, images, packages — and finally the `/SHA256SUMS` content manifest.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::rel_name;
use crate::config::Settings;
use crate::engine::Task;
use crate::product::{self, PlatformVersions, ProductInfo};

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
                .doc(format!("render {origin}"))
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
        .doc("write product.txt")
        .value("product", serde_json::to_string(&info)?)
        .output(&dest);
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
        crate::fsutil::write_if_changed(&d, info.render(ts).as_bytes(), Some(0o644)).map(|_| ())
    }));

    let mut content_deps: Vec<String> = out.iter().map(|t| t.name.clone()).collect();
    content_deps.extend(["salt_tree", "images", "packaging"].map(String::from));

    // SHA256SUMS: sha256 of every other regular file of the tree.
    let sums = settings.iso_root.join("SHA256SUMS");
    let root = settings.iso_root.clone();
    let s = sums.clone();
    out.push(
        Task::new("populate_iso:SHA256SUMS")
            .doc("write the /SHA256SUMS content manifest of the ISO tree")
            .deps(content_deps.clone())
            .input_tree(&settings.iso_root)
            .output(&sums)
            .action(move |ctx| {
                let mut text = String::new();
                let files = crate::engine::signature::walk_tree(&root)?;
                for f in files {
                    if f == s || !std::fs::symlink_metadata(&f)?.is_file() {
                        continue;
                    }
                    let hex = ctx
                        .sha256(&f)
                        .with_context(|| format!("cannot hash {}", f.display()))?;
                    let _ = writeln!(text, "{hex}  ./{}", rel_name(&f, &root));
                }
                crate::fsutil::write_if_changed(&s, text.as_bytes(), Some(0o644)).map(|_| ())
            }),
    );
    content_deps.push("populate_iso:SHA256SUMS".into());
    content_deps.push("completeness".into());
    out.push(
        Task::new("populate_iso")
            .public()
            .doc("Populate the ISO tree (_build/root)")
            .deps(content_deps),
    );
    Ok(out)
}
