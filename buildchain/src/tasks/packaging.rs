//! Tasks `packaging` and `packaging:*`:
//! - `packaging:<pkg>/rpm`: builds one RPM from its definition into its repository directory;
//! - `packaging:<repo>/fetch` (release profile): pins of that repository, store → repo directory;
//! - `packaging:<repo>/repodata`: drops RPMs that no longer belong, copies GPG keys, writes
//!   `repodata/`;
//! - `packaging`: the public group.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use crate::config::Settings;
use crate::engine::{Action, Task, TaskContext};
use crate::packaging::product::{Plan, Product};
use crate::store::Store;

/// Every `packaging:*` task plus the `packaging` group task that depends on all of them.
pub fn tasks(settings: &Settings) -> Result<Vec<Task>> {
    let product = Arc::new(Product::from_settings(settings));
    let plan = Arc::new(product.plan()?);
    let store_root = settings.store_root.clone();
    let mut tasks = Vec::new();
    let mut all = Vec::new();
    let signing = crate::trust::signing::describe(settings.signer.as_deref());
    let common = |t: Task| {
        t.value("signing key", signing.clone())
            .value("project", product.project.clone())
            .value("product version", product.product_version.clone())
            .value("source date", product.source_date.to_string())
    };

    for (name, p) in &plan.packages {
        let tname = format!("packaging:{name}/rpm");
        let dest = product.repo_dir(&p.repository).join(p.nevra.file_name());
        let mut t = common(Task::new(&tname))
            .cacheable()
            .doc(format!("Build {}", p.nevra.file_name()))
            .input_file(&p.def.path)
            .value("nevra", format!("{:?}", p.nevra))
            .value("repository", p.repository.clone())
            .output(&dest);
        for f in p.def.source_files() {
            t = t.input_file(f);
        }
        t = t.runs(BuildRpm {
            product: product.clone(),
            plan: plan.clone(),
            name: name.clone(),
        });
        all.push(tname);
        tasks.push(t);
    }

    for (repo, r) in &plan.repos {
        let mut deps: Vec<String> = r
            .built
            .iter()
            .map(|n| format!("packaging:{n}/rpm"))
            .collect();
        if !r.locked.is_empty() {
            let tname = format!("packaging:{repo}/fetch");
            let dir = product.repo_dir(repo);
            let mut t = common(Task::new(&tname))
                .doc(format!("Fetch the pinned RPMs of repository {repo}"))
                .value("pins", serde_json::to_string(&r.locked).unwrap_or_default());
            for p in &r.locked {
                t = t.output(dir.join(p.file_name()));
            }
            t = t.runs(FetchRepo {
                product: product.clone(),
                plan: plan.clone(),
                repo: repo.clone(),
                store_root: store_root.clone(),
            });
            deps.push(tname.clone());
            all.push(tname);
            tasks.push(t);
        }

        let tname = format!("packaging:{repo}/repodata");
        let dir = product.repo_dir(repo);
        let mut t = common(Task::new(&tname))
            .doc(format!(
                "Write the repodata of {}",
                crate::packaging::repo_dir_name(&product.project, repo, product.major)
            ))
            .internal()
            .cacheable()
            .deps(deps)
            .value("rpms", repo_rpm_list(&plan, repo))
            .output(dir.join("repodata").join("repomd.xml"));
        for f in plan.repos[repo].rpm_files(&plan) {
            t = t.input_file(dir.join(f));
        }
        for k in &r.gpg_keys {
            t = t.input_file(k);
        }
        t = t.runs(AssembleRepo {
            product: product.clone(),
            plan: plan.clone(),
            repo: repo.clone(),
        });
        all.push(tname);
        tasks.push(t);
    }

    tasks.push(
        Task::new("packaging")
            .public()
            .doc("Build the product RPMs and yum repositories (packages/redhat/…)")
            .deps(all),
    );
    Ok(tasks)
}

/// `packaging:<pkg>/rpm`: builds one RPM.
struct BuildRpm {
    product: Arc<Product>,
    plan: Arc<Plan>,
    name: String,
}

impl Action for BuildRpm {
    fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        let path = self.product.build_rpm(&self.plan.packages[&self.name])?;
        ctx.add_output(&path);
        Ok(())
    }
}

/// `packaging:<repo>/fetch`: the pinned RPMs of one repository, through the store.
struct FetchRepo {
    product: Arc<Product>,
    plan: Arc<Plan>,
    repo: String,
    store_root: PathBuf,
}

impl Action for FetchRepo {
    fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        let (product, plan, repo) = (&self.product, &self.plan, &self.repo);
        let store = Store::shared(&self.store_root)?;
        let total: u64 = plan.repos[repo]
            .locked
            .iter()
            .filter(|p| !p.sha256.as_ref().is_some_and(|s| store.contains(s)))
            .filter_map(|p| p.size)
            .sum();
        let bar = ctx.progress(Some(total), "downloading RPMs");
        let (files, _stats) = product.fetch_repo(plan, repo, &store, &mut |_, n| bar.inc(n))?;
        bar.finish();
        let dir = product.repo_dir(repo);
        for p in &plan.repos[repo].locked {
            // Links of verified store blobs: the engine need not read them again.
            let (Some(sha), dest) = (&p.sha256, dir.join(p.file_name())) else {
                continue;
            };
            if super::images::is_store_link(&store, &dest, sha) {
                ctx.record_digest(&dest, sha.clone());
            }
        }
        for f in files {
            ctx.add_output(f);
        }
        Ok(())
    }
}

/// `packaging:<repo>/repodata`: keys and repodata of one repository.
struct AssembleRepo {
    product: Arc<Product>,
    plan: Arc<Plan>,
    repo: String,
}

impl Action for AssembleRepo {
    fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        let files = self.product.assemble_repo(&self.plan, &self.repo)?;
        let rpms: Vec<String> = self.plan.repos[&self.repo].rpm_files(&self.plan);
        for f in files {
            // RPMs belong to their rpm/fetch tasks; this task owns keys and repodata.
            let is_rpm = f
                .file_name()
                .is_some_and(|n| rpms.iter().any(|r| n == r.as_str()));
            if !is_rpm {
                ctx.add_output(f);
            }
        }
        Ok(())
    }
}

fn repo_rpm_list(plan: &Plan, repo: &str) -> String {
    plan.repos[repo].rpm_files(plan).join(",")
}

/// Name → `version-release` of every package the product ships, for `versions.json`.
pub fn versions(settings: &Settings) -> Result<std::collections::BTreeMap<String, String>> {
    let product = Product::from_settings(settings);
    let plan = product.plan()?;
    let mut out = std::collections::BTreeMap::new();
    for p in plan.packages.values() {
        out.insert(
            p.nevra.name.clone(),
            format!("{}-{}", p.nevra.version, p.nevra.release),
        );
    }
    for r in plan.repos.values() {
        for l in &r.locked {
            let evr = l.evr.split_once(':').map(|(_, vr)| vr).unwrap_or(&l.evr);
            out.insert(l.name.clone(), evr.to_string());
        }
    }
    Ok(out)
}
