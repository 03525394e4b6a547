//! `completeness`: the gate between a populated tree and mastering (SPEC §12). It fails the build
//! with `file:line` of every image reference the ISO does not serve and every RPM `Requires`
//! nothing provides (see [`crate::trust::completeness`]).

use anyhow::{bail, Result};

use crate::config::Settings;
use crate::engine::Task;
use crate::trust::completeness::{self, BASE_OS_PROVIDES};

/// The `completeness` task (a dependency of the `populate_iso` group, hence of `iso`).
pub fn tasks(settings: &Settings) -> Result<Vec<Task>> {
    let root = settings.iso_root.clone();
    let repo = settings.repo_root.clone();
    let prefix = format!("{}-{}/", settings.project_lower(), settings.version.full());
    let mut t = Task::new("completeness")
        .doc("Check that every image and RPM dependency the ISO references is shipped")
        .deps(["salt_tree", "images", "packaging"])
        .input_file(repo.join(BASE_OS_PROVIDES))
        .value("registry prefix", prefix.clone());
    for d in ["salt", "pillar", "images", "packages"] {
        t = t.input_tree(root.join(d));
    }
    Ok(vec![t.action(move |ctx| {
        let base = completeness::load_base_provides(&repo)?;
        // The engine's listing of the tree, shared with the other readers of this run.
        let listing = ctx.walk(&root)?;
        let dangling = completeness::check_tree_in(&root, &listing, &prefix, &base)?;
        if !dangling.is_empty() {
            let lines: Vec<String> = dangling.iter().map(|d| format!("  {d}")).collect();
            bail!(
                "{} dangling reference(s) in {}:\n{}",
                dangling.len(),
                root.display(),
                lines.join("\n")
            );
        }
        ctx.note("every referenced image and RPM dependency is shipped");
        Ok(())
    })])
}
