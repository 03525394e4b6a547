//! `solutions`: builds every version of every Solution under `solutions/` into
//! `dist/solutions/<name>-<version>.iso` (+ `dist/solutions/SHA256SUM`), incrementally.
//! Not part of `iso`: run `cargo xtask solutions`.

use anyhow::{Context, Result};

use crate::config::Settings;
use crate::engine::Task;
use crate::solution::build::{build_version, BuildInfo};
use crate::solution::definition::Definition;
use crate::store::Store;

/// One `solutions:<name>` task per Solution directory, and the `solutions` group.
pub fn tasks(settings: &Settings) -> Result<Vec<Task>> {
    let root = settings.repo_root.join("solutions");
    let outdir = settings.dist_dir.join("solutions");
    let mut out = Vec::new();
    let mut dirs: Vec<_> = match std::fs::read_dir(&root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.join("solution.yaml").is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    dirs.sort();
    for dir in dirs {
        let def = Definition::load(&dir)?;
        // The build facts are gathered in the action (git runs there, not on every `list`);
        // their inputs are the settings and the git state files.
        let sde = settings.source_date_epoch;
        let mut t = Task::new(format!("solutions:{}", def.name))
            .cacheable()
            .doc(format!(
                "Build the {} ISOs ({}) into dist/solutions/",
                def.display_name,
                def.versions.join(", ")
            ))
            .input_tree(&dir)
            .value(
                "SOURCE_DATE_EPOCH",
                sde.map_or_else(|| "unset (last commit time)".to_string(), |e| e.to_string()),
            )
            .value("build host", crate::product::build_host(sde.is_some()))
            .value(
                "signing key",
                crate::trust::signing::describe(settings.signer.as_deref()),
            )
            .output(outdir.join("SHA256SUM"));
        for f in crate::product::git_state_files(&settings.repo_root) {
            t = t.input_file(f);
        }
        for v in &def.versions {
            t = t.output(outdir.join(format!("{}-{v}.iso", def.name)));
            t = t.output(outdir.join(format!("{}-{v}.spdx.json", def.name)));
        }
        let (d, o, store_root) = (dir.clone(), outdir.clone(), settings.store_root.clone());
        let signer = settings.signer.clone();
        out.push(t.action(move |ctx| {
            let def = Definition::load(&d)?;
            let store = Store::shared(&store_root)?;
            let mut info = BuildInfo::collect(sde, &d);
            info.signer = signer.clone();
            for v in &def.versions {
                let built = build_version(&def, &d, v, &o, &store, &info)
                    .with_context(|| format!("Solution {} {v}", def.name))?;
                ctx.record_digest(&built.iso, &built.sha256);
                ctx.note(&format!("built {}", built.iso.display()));
            }
            Ok(())
        }));
    }
    let deps: Vec<String> = out.iter().map(|t| t.name.clone()).collect();
    out.push(
        Task::new("solutions")
            .public()
            .doc("Build every Solution ISO under solutions/ into dist/solutions/")
            .deps(deps),
    );
    Ok(out)
}
