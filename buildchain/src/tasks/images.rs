//! Tasks `images` and `images:*`: one task per inventory image (SPEC §5), writing
//! `<iso_root>/images/<name>/<tag>/` (skopeo `dir:` layout, blobs hard-linked from the store) and,
//! for `tarball: true`, `<iso_root>/images/<name>-<tag>.tar`.
//!
//! A task's signature covers the inventory entry (as JSON), its platform, and for local builds
//! the build directories of the image and of its local bases plus `SOURCE_DATE_EPOCH`; an
//! up-to-date image is skipped by the engine, so it needs no network at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use crate::config::Settings;
use crate::engine::{Action, Task, TaskContext};
use crate::images::inventory::{Inventory, Source};
use crate::images::ImageBuilder;
use crate::store::Store;

/// Repository prefix of the tags written into docker-archive tarballs
/// (`metalk8s-registry-from-config.invalid/metalk8s-<version>/`).
pub fn tarball_repo_prefix(settings: &Settings) -> String {
    format!(
        "metalk8s-registry-from-config.invalid/{}-{}/",
        settings.project_lower(),
        settings.version.full()
    )
}

/// Every `images:*` task plus the `images` group task that depends on all of them.
pub fn tasks(settings: &Settings) -> Result<Vec<Task>> {
    let repo_root = settings.repo_root.clone();
    let inventory = Arc::new(Inventory::load(&repo_root, settings.profile)?);
    let images_root = settings.iso_root.join("images");
    let prefix = tarball_repo_prefix(settings);
    let epoch = settings.timestamp();
    let mut tasks = Vec::new();
    let mut names = Vec::new();
    for (name, entry) in &inventory.images {
        let task_name = format!("images:{name}");
        let source = entry.source(&repo_root)?;
        let kind = match &source {
            Source::Registry(r) => format!("from {r}"),
            Source::OciLayout { path, .. } => format!("from OCI layout {}", rel(&repo_root, path)),
            Source::DockerArchive(p) => format!("from docker archive {}", rel(&repo_root, p)),
            Source::Local(d) => format!("built from {}", rel(&repo_root, d)),
        };
        let dest = images_root.join(name).join(&entry.tag);
        let mut t = Task::new(&task_name)
            .doc(format!("Image {name}:{} {kind}", entry.tag))
            .value("inventory entry", entry.to_json())
            .value("platform", entry.platform()?.to_string())
            .output(dest.join("manifest.json"))
            .output(dest.join("version"))
            .owns_dir(&dest);
        // A local build is a pure function of its inputs: its result may come from the remote
        // cache (fetched and imported images come through the store's blob chain already).
        if matches!(source, Source::Local(_)) {
            t = t.cacheable();
        }
        // The inventory files themselves are not inputs (an unrelated entry changing must not
        // rebuild this image): the entry's JSON is.
        // Local builds: the image's directory and every local ancestor's (entry + directory).
        let mut cur = Some(name.clone());
        let mut first = true;
        while let Some(n) = cur.take() {
            let e = &inventory.images[&n];
            if !first {
                t = t.value(format!("base {n}"), e.to_json());
            }
            match e.source(&repo_root)? {
                Source::Local(dir) => {
                    t = t.input_tree(&dir);
                    if first {
                        t = t.value("SOURCE_DATE_EPOCH", epoch.to_string());
                    }
                    if let Some(b) = e.local_base(&repo_root)? {
                        if first {
                            t = t.dep(format!("images:{b}"));
                        }
                        cur = Some(b);
                    }
                }
                Source::OciLayout { path, .. } if path.is_dir() => t = t.input_tree(&path),
                Source::OciLayout { path, .. } | Source::DockerArchive(path) => {
                    t = t.input_file(&path)
                }
                Source::Registry(_) => {}
            }
            first = false;
        }
        if entry.tarball {
            let tar = images_root.join(format!("{name}-{}.tar", entry.tag));
            t = t
                .value("tarball repository prefix", prefix.clone())
                .value("tarball mtime", epoch.to_string())
                .output(tar);
        }
        t = t.runs(MaterializeImage {
            repo_root: repo_root.clone(),
            images_root: images_root.clone(),
            prefix: prefix.clone(),
            inventory: inventory.clone(),
            store_root: settings.store_root.clone(),
            name: name.clone(),
            tag: entry.tag.clone(),
            epoch,
        });
        names.push(task_name);
        tasks.push(t);
    }
    tasks.push(
        Task::new("images")
            .public()
            .doc("Fetch, import or build every container image of the inventory into the ISO tree")
            .deps(names),
    );
    Ok(tasks)
}

/// The action of `images:<name>`: fetch, import or build one image into the ISO tree.
struct MaterializeImage {
    repo_root: PathBuf,
    images_root: PathBuf,
    /// Repository prefix of docker-archive tags.
    prefix: String,
    inventory: Arc<Inventory>,
    store_root: PathBuf,
    name: String,
    tag: String,
    /// Timestamp of everything written.
    epoch: u64,
}

impl Action for MaterializeImage {
    fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        let store = Store::shared(&self.store_root)?;
        let builder = ImageBuilder::new(
            &self.repo_root,
            store.clone(),
            (*self.inventory).clone(),
            self.epoch,
        );
        let progress = ctx.progress(None, &format!("{}:{}", self.name, self.tag));
        let files =
            builder.materialize(&self.name, &self.images_root, &self.prefix, Some(&progress));
        progress.finish();
        for f in files? {
            if let Some(hex) = linked_store_blob(&store, &f) {
                ctx.record_digest(&f, hex);
            }
            ctx.add_output(f);
        }
        Ok(())
    }
}

/// The digest of `p` when it is a hard link of the store blob its name says: the store verified
/// those bytes when it took them, so the engine need not read them again.
fn linked_store_blob(store: &Store, p: &Path) -> Option<String> {
    let name = p.file_name()?.to_str()?;
    is_store_link(store, p, name).then(|| name.to_string())
}

/// Whether `p` is a hard link of the (verified) store blob `hex`.
pub(crate) fn is_store_link(store: &Store, p: &Path, hex: &str) -> bool {
    store.is_link_of(p, hex)
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Name → tag of every image the product ships, for `versions.json`.
pub fn versions(settings: &Settings) -> Result<std::collections::BTreeMap<String, String>> {
    let inventory = Inventory::load(&settings.repo_root, settings.profile)?;
    Ok(inventory
        .images
        .iter()
        .map(|(name, entry)| (name.clone(), entry.tag.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::Input;

    fn run(task: &Task) -> Vec<std::path::PathBuf> {
        let mut ctx = TaskContext::standalone(&task.name);
        task.action
            .as_ref()
            .expect("action")
            .run(&mut ctx)
            .expect("task action");
        ctx.added_outputs().to_vec()
    }

    #[test]
    fn one_task_per_image_and_actions_write_the_tree() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::copy(src.join("VERSION"), repo.join("VERSION")).unwrap();
        let st = std::process::Command::new("cp")
            .arg("-r")
            .arg(src.join("images"))
            .arg(&repo)
            .status()
            .unwrap();
        assert!(st.success());
        let o = crate::config::SettingOverrides {
            build_root: Some(tmp.path().join("build")),
            store_root: Some(tmp.path().join("store")),
            source_date_epoch: Some(1_700_000_000),
            ..Default::default()
        };
        let settings = Settings::load(&repo, &o).unwrap();
        let tasks = tasks(&settings).unwrap();
        let by_name: BTreeMap<&str, &Task> = tasks.iter().map(|t| (t.name.as_str(), t)).collect();
        let group = by_name["images"];
        assert!(group.public && group.action.is_none());
        assert_eq!(group.deps.len(), tasks.len() - 1);
        let utils = by_name["images:metalk8s-utils"];
        assert_eq!(utils.deps, vec!["images:metalk8s-base".to_string()]);
        assert!(utils.inputs.contains(&Input::Tree(
            settings.repo_root.join("images/metalk8s-base")
        )));
        assert!(utils
            .inputs
            .iter()
            .any(|i| matches!(i, Input::Value { key, .. } if key == "inventory entry")));
        let pause = by_name["images:pause"];
        let tar = settings.iso_root.join("images/pause-3.9.tar");
        assert!(pause.outputs.contains(&tar));

        // Run the actions (bases first, as the engine would).
        let mut written = Vec::new();
        for n in [
            "images:metalk8s-base",
            "images:pause",
            "images:metalk8s-utils",
        ] {
            written.extend(run(by_name[n]));
        }
        assert!(written.contains(&tar) && tar.is_file());
        for f in &written {
            assert!(
                f.starts_with(settings.iso_root.join("images")) && f.is_file(),
                "{}",
                f.display()
            );
        }
        let manifest = settings
            .iso_root
            .join("images/metalk8s-utils/1.0/manifest.json");
        let before = std::fs::read(&manifest).unwrap();
        // A second run writes the same bytes.
        let again = run(utils);
        assert_eq!(std::fs::read(&manifest).unwrap(), before);
        assert!(again.contains(&manifest));
    }
}
