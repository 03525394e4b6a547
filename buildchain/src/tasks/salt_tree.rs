//! `salt_tree`: deploys `salt/states` → `<iso>/salt` and `salt/pillar` → `<iso>/pillar`.
//!
//! One task per file, discovered by walking the tree (no hand-kept list: a new file ships, a
//! removed file's task disappears and the engine prunes its output). `*.in` files are rendered
//! with the template context (a value input, so a version change re-renders them), and
//! `salt/metalk8s/versions.json` is generated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{copy_file_if_changed, rel_name};
use crate::config::Settings;
use crate::engine::Task;
use crate::product::{self, PlatformVersions};

/// Every `salt_tree:*` task and the `salt_tree` group.
pub fn tasks(settings: &Settings) -> Result<Vec<Task>> {
    let platform = PlatformVersions::load(&settings.repo_root)?;
    let ctx = product::template_context(settings, &platform);
    let ctx_json = serde_json::to_string(&ctx)?;
    let mut out = Vec::new();
    // ISO path → the source producing it (`top.sls` and `top.sls.in` cannot both ship).
    let mut producers: BTreeMap<String, String> = BTreeMap::new();
    for (src_dir, dest_dir) in [("states", "salt"), ("pillar", "pillar")] {
        let src_root = settings.repo_root.join("salt").join(src_dir);
        let dest_root = settings.iso_root.join(dest_dir);
        for src in crate::engine::signature::walk_tree(&src_root)? {
            let rel = rel_name(&src, &src_root);
            let shipped = format!("{dest_dir}/{}", rel.strip_suffix(".in").unwrap_or(&rel));
            let origin = rel_name(&src, &settings.repo_root);
            if let Some(other) = producers.insert(shipped.clone(), origin.clone()) {
                let (a, b) = if other < origin {
                    (other, origin)
                } else {
                    (origin, other)
                };
                anyhow::bail!(
                    "{a} and {b} both produce {shipped} in the ISO tree: remove one of them"
                );
            }
            if let Some(stem) = rel.strip_suffix(".in") {
                let dest = dest_root.join(stem);
                out.push(render_task(settings, &src, &dest, &ctx, &ctx_json)?);
            } else {
                let dest = dest_root.join(&rel);
                let name = format!("salt_tree:{}", rel_name(&dest, &settings.iso_root));
                let (s, d) = (src.clone(), dest.clone());
                out.push(
                    Task::new(name)
                        .doc(format!("Copy salt/{src_dir}/{rel}"))
                        .input_file(&src)
                        .output(&dest)
                        .action(move |_| {
                            copy_file_if_changed(&s, &d)?;
                            crate::testhook::kill_point("salt");
                            Ok(())
                        }),
                );
            }
        }
    }
    out.push(versions_json_task(settings, &platform)?);
    out.push(registry_config_task(settings));
    let deps: Vec<String> = out.iter().map(|t| t.name.clone()).collect();
    out.push(
        Task::new("salt_tree")
            .public()
            .doc("Deploy the Salt tree (states, pillar, versions.json) into the ISO tree")
            .deps(deps),
    );
    Ok(out)
}

/// A task rendering template `src` (`@@KEY` placeholders) into `dest`.
pub fn render_task(
    settings: &Settings,
    src: &Path,
    dest: &Path,
    ctx: &BTreeMap<String, String>,
    ctx_json: &str,
) -> Result<Task> {
    let name = format!("salt_tree:{}", rel_name(dest, &settings.iso_root));
    let (s, d, c) = (src.to_path_buf(), dest.to_path_buf(), ctx.clone());
    let origin = rel_name(src, &settings.repo_root);
    Ok(Task::new(name)
        .doc(format!("Render {origin}"))
        .input_file(src)
        .value("template context", ctx_json)
        .output(dest)
        .action(move |_| render_file(&s, &d, &c, &origin)))
}

/// Renders a template file into `dest` (kept executable when the template is).
pub fn render_file(
    src: &Path,
    dest: &Path,
    ctx: &BTreeMap<String, String>,
    origin: &str,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let text =
        std::fs::read_to_string(src).with_context(|| format!("cannot read {}", src.display()))?;
    let rendered = product::render_template(&text, ctx, origin)?;
    let exec = std::fs::metadata(src)?.permissions().mode() & 0o111 != 0
        || dest.extension().is_some_and(|e| e == "sh");
    let mode = if exec { 0o755 } else { 0o644 };
    crate::fsutil::write_if_changed(dest, rendered.as_bytes(), Some(mode))?;
    crate::testhook::kill_point("salt");
    Ok(())
}

fn versions_json_task(settings: &Settings, platform: &PlatformVersions) -> Result<Task> {
    let images = super::images::versions(settings)?;
    let packages = super::packaging::versions(settings)?;
    let text = product::versions_json(settings, platform, &images, &packages)?;
    let dest: PathBuf = settings.iso_root.join("salt/metalk8s/versions.json");
    let d = dest.clone();
    let t = text.clone();
    Ok(Task::new("salt_tree:salt/metalk8s/versions.json")
        .doc("Generate salt/metalk8s/versions.json")
        .internal()
        .value("versions.json", text)
        .output(&dest)
        .action(move |_| {
            crate::fsutil::write_if_changed(&d, t.as_bytes(), Some(0o644)).map(|_| ())
        }))
}

/// `salt/metalk8s/repo/files/metalk8s-registry{,-common}.inc`: the static-registry nginx
/// includes generated from the built image tree (SPEC §6).
fn registry_config_task(settings: &Settings) -> Task {
    use crate::registry_config::{generate, Constants, Options};
    let files = settings.iso_root.join("salt/metalk8s/repo/files");
    let per_version = files.join("metalk8s-registry.inc");
    let common = files.join("metalk8s-registry-common.inc");
    let images = settings.iso_root.join("images");
    let opts = Options {
        name_prefix: format!("{}-{}/", settings.project_lower(), settings.version.full()),
        server_root: format!("${}", product::registry_root_var(settings)),
        constants: Constants::Omit,
    };
    let (pv, cm, img) = (per_version.clone(), common.clone(), images.clone());
    let o = opts.clone();
    Task::new("salt_tree:salt/metalk8s/repo/files/metalk8s-registry.inc")
        .doc("Generate the static-registry nginx includes from the image tree")
        .internal()
        .dep("images")
        .input_tree(&images)
        .value("name prefix", opts.name_prefix.clone())
        .value("server root", opts.server_root.clone())
        .output(&per_version)
        .output(&common)
        .action(move |_| {
            std::fs::create_dir_all(&img)?;
            let text = generate(&img, &o)?;
            crate::fsutil::write_if_changed(&pv, text.as_bytes(), Some(0o644))?;
            let constants = generate(
                &img,
                &Options {
                    constants: Constants::Only,
                    ..o.clone()
                },
            )?;
            crate::fsutil::write_if_changed(&cm, constants.as_bytes(), Some(0o644))?;
            Ok(())
        })
}
