//! Third-party RPM pins: the lock file (`packages/redhat/<major>/lock.yaml`), the lock command
//! that resolves requested names to the newest matching packages of the configured upstream
//! repositories (optionally with their recursive requires, like `repoquery --resolve
//! --recursive`), and the fetch that downloads pinned RPMs into the content-addressed store,
//! verifying size and sha256.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::evr::Evr;
use super::remote::{self, RemoteDep, RemotePackage, RemoteRepo};
use crate::store::Store;

/// An upstream yum repository packages are taken from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Short name (`kubernetes`).
    pub name: String,
    /// Base URL (the directory holding `repodata/`).
    pub baseurl: String,
    /// Product repository its packages go to (`kubernetes` → `<project>-kubernetes-el8`).
    pub repository: String,
}

/// One pinned package.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// Name.
    pub name: String,
    /// `epoch:version-release`.
    pub evr: String,
    /// Architecture.
    pub arch: String,
    /// sha256 of the RPM (hex); absent = not pinned yet (run the lock command).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Size of the RPM in bytes; absent = not pinned yet.
    #[serde(default)]
    pub size: Option<u64>,
    /// Name of the [`Source`] it comes from.
    pub source: String,
}

impl LockedPackage {
    /// `name-version-release.arch.rpm` (the name in the product repository).
    pub fn file_name(&self) -> String {
        let e = Evr::parse(&self.evr);
        format!(
            "{}-{}-{}.{}.rpm",
            self.name, e.version, e.release, self.arch
        )
    }
    /// `name-evr.arch`, for messages.
    pub fn nevra(&self) -> String {
        format!("{}-{}.{}", self.name, self.evr, self.arch)
    }
}

/// The lock file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Upstream repositories.
    #[serde(default)]
    pub sources: Vec<Source>,
    /// Pins, sorted by name, arch.
    #[serde(default)]
    pub packages: Vec<LockedPackage>,
}

impl LockFile {
    /// Reads a lock file (errors name file:line:col).
    pub fn load(path: &Path) -> Result<Self> {
        let l: LockFile = crate::yamlerr::load_yaml(path)?;
        l.check(path)?;
        Ok(l)
    }

    /// Checks names, digests and source references.
    pub fn check(&self, path: &Path) -> Result<()> {
        let file = path.display();
        let names: BTreeSet<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
        for (i, p) in self.packages.iter().enumerate() {
            if !names.contains(p.source.as_str()) {
                bail!(
                    "{file}: packages[{i}] ({}): unknown source {:?}",
                    p.name,
                    p.source
                );
            }
            if let Some(s) = &p.sha256 {
                if !crate::store::is_sha256_hex(s) {
                    bail!(
                        "{file}: packages[{i}] ({}): sha256 {s:?} is not 64 lower-case hex digits",
                        p.name
                    );
                }
            }
        }
        Ok(())
    }

    /// Fails, naming every package without sha256/size, when some pin is incomplete.
    pub fn require_pinned(&self, path: &Path) -> Result<()> {
        let missing: Vec<String> = self
            .packages
            .iter()
            .filter(|p| p.sha256.is_none() || p.size.is_none())
            .map(LockedPackage::nevra)
            .collect();
        if !missing.is_empty() {
            bail!(
                "{}: {} package(s) have no sha256/size pin yet ({}); run `buildchain packaging lock` \
                 with network access to fill them",
                path.display(),
                missing.len(),
                missing.join(", ")
            );
        }
        Ok(())
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Serialises as YAML with a header comment.
    pub fn to_yaml(&self) -> Result<String> {
        let body = serde_saphyr::to_string(self).context("cannot serialise the lock file")?;
        Ok(format!(
            "# Third-party RPM pins, written by `buildchain packaging lock` from release.yaml.\n\
             # Do not edit by hand: change release.yaml and re-run the lock command.\n{body}"
        ))
    }
}

/// A requested package in `release.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Package name.
    pub name: String,
    /// Restrict to one source (default: any).
    #[serde(default)]
    pub source: Option<String>,
    /// Version prefix (`1.30` matches `1.30.1` but not `1.300.0`); default: newest.
    #[serde(default)]
    pub version: Option<String>,
    /// Also pin the recursive requires the sources satisfy.
    #[serde(default)]
    pub resolve: bool,
}

/// The lock command's input (`packages/redhat/<major>/release.yaml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockRequest {
    /// Upstream repositories.
    pub sources: Vec<Source>,
    /// Accepted architectures (default `x86_64`, `noarch`).
    #[serde(default = "default_arches")]
    pub arches: Vec<String>,
    /// Requested packages.
    pub packages: Vec<Request>,
}

fn default_arches() -> Vec<String> {
    vec!["x86_64".into(), "noarch".into()]
}

impl LockRequest {
    /// Reads a request file.
    pub fn load(path: &Path) -> Result<Self> {
        crate::yamlerr::load_yaml(path)
    }
}

fn version_matches(v: &str, prefix: &str) -> bool {
    v == prefix
        || v.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with(['.', '-', '~', '^', '+']))
}

fn dep_satisfied_by(provide: &RemoteDep, req: &RemoteDep) -> bool {
    if provide.name != req.name {
        return false;
    }
    let (Some(want), Some(have)) = (&req.evr, &provide.evr) else {
        return true;
    };
    let mut have = have.clone();
    if want.release.is_empty() {
        have.release.clear();
    }
    let ord = have.cmp(want);
    use std::cmp::Ordering::*;
    match req.flags.as_str() {
        "EQ" => ord == Equal,
        "GE" => ord != Less,
        "GT" => ord == Greater,
        "LE" => ord != Greater,
        "LT" => ord == Less,
        _ => true,
    }
}

fn provides(p: &RemotePackage, req: &RemoteDep) -> bool {
    if req.name.starts_with('/') && p.files.iter().any(|f| f == &req.name) {
        return true;
    }
    p.provides.iter().any(|d| dep_satisfied_by(d, req))
}

/// What [`resolve`] found.
#[derive(Clone, Debug)]
pub struct Resolution {
    /// The new lock.
    pub lock: LockFile,
    /// Requirements no source satisfies (expected to come from the base OS), with who needs them.
    pub unresolved: Vec<(String, String)>,
}

/// Resolves a request against already-loaded repositories (no network): newest matching
/// package per request, then (for `resolve: true`) every requirement not yet satisfied by a
/// selected package, recursively, taking the newest provider.
pub fn resolve(req: &LockRequest, repos: &[RemoteRepo]) -> Result<Resolution> {
    let arch_ok = |p: &RemotePackage| req.arches.iter().any(|a| a == &p.arch);
    let mut selected: BTreeMap<(String, String), (String, RemotePackage)> = BTreeMap::new();
    let mut queue: Vec<(String, RemotePackage)> = Vec::new();
    let mut recursive: BTreeSet<(String, String)> = BTreeSet::new();
    for r in &req.packages {
        if let Some(s) = &r.source {
            if !repos.iter().any(|x| &x.name == s) {
                bail!("request {}: unknown source {s:?}", r.name);
            }
        }
        let cands: Vec<_> = repos
            .iter()
            .filter(|x| r.source.as_ref().is_none_or(|s| s == &x.name))
            .flat_map(|x| x.packages.iter().map(move |p| (x, p)))
            .filter(|(_, p)| p.name == r.name && arch_ok(p))
            .filter(|(_, p)| {
                r.version
                    .as_ref()
                    .is_none_or(|v| version_matches(&p.evr.version, v))
            })
            .collect();
        let Some((repo, pkg)) = newest(cands) else {
            bail!(
                "request {}{}: no such package in {}",
                r.name,
                r.version
                    .as_ref()
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default(),
                r.source.clone().unwrap_or_else(|| "any source".into())
            );
        };
        let key = (pkg.name.clone(), pkg.arch.clone());
        if r.resolve {
            recursive.insert(key.clone());
        }
        if let std::collections::btree_map::Entry::Vacant(e) = selected.entry(key) {
            e.insert((repo.name.clone(), pkg.clone()));
            queue.push((repo.name.clone(), pkg.clone()));
        }
    }
    let mut unresolved = BTreeSet::new();
    while let Some((_, pkg)) = queue.pop() {
        if !recursive.contains(&(pkg.name.clone(), pkg.arch.clone())) {
            continue;
        }
        for d in &pkg.requires {
            if d.name.starts_with("rpmlib(") {
                continue;
            }
            if selected.values().any(|(_, p)| provides(p, d)) {
                continue;
            }
            let cands: Vec<_> = repos
                .iter()
                .flat_map(|x| x.packages.iter().map(move |p| (x, p)))
                .filter(|(_, p)| arch_ok(p) && provides(p, d))
                .collect();
            match newest(cands) {
                Some((repo, p)) => {
                    let key = (p.name.clone(), p.arch.clone());
                    recursive.insert(key.clone());
                    selected.insert(key, (repo.name.clone(), p.clone()));
                    queue.push((repo.name.clone(), p.clone()));
                }
                None => {
                    unresolved.insert((d.name.clone(), pkg.nevra()));
                }
            }
        }
    }
    let mut packages = Vec::new();
    for (source, p) in selected.values() {
        if p.checksum_type != "sha256" {
            bail!(
                "{} in source {source}: the repository gives a {} checksum; only sha256 pins are accepted",
                p.nevra(),
                p.checksum_type
            );
        }
        packages.push(LockedPackage {
            name: p.name.clone(),
            evr: p.evr.to_string(),
            arch: p.arch.clone(),
            sha256: Some(p.checksum.clone()),
            size: Some(p.size),
            source: source.clone(),
        });
    }
    Ok(Resolution {
        lock: LockFile {
            sources: req.sources.clone(),
            packages,
        },
        unresolved: unresolved.into_iter().collect(),
    })
}

fn newest<'a>(
    cands: Vec<(&'a RemoteRepo, &'a RemotePackage)>,
) -> Option<(&'a RemoteRepo, &'a RemotePackage)> {
    cands
        .into_iter()
        .max_by(|a, b| a.1.evr.cmp(&b.1.evr).then_with(|| b.0.name.cmp(&a.0.name)))
}

/// Loads every source of `req` over HTTP, resolves, and writes the lock atomically to `out`.
pub fn lock(req_path: &Path, out: &Path) -> Result<Resolution> {
    let req = LockRequest::load(req_path)?;
    let agent = remote::agent();
    let repos = req
        .sources
        .iter()
        .map(|s| remote::load_repo(&agent, &s.name, &s.baseurl))
        .collect::<Result<Vec<_>>>()?;
    let res = resolve(&req, &repos).with_context(|| format!("{}", req_path.display()))?;
    crate::fsutil::write_if_changed(out, res.lock.to_yaml()?.as_bytes(), Some(0o644))?;
    Ok(res)
}

/// A pinned RPM present in the store.
#[derive(Clone, Debug)]
pub struct FetchedRpm {
    /// The pin.
    pub package: LockedPackage,
    /// Its blob in the store (sha256 hex).
    pub sha256: String,
}

/// Statistics of a fetch.
#[derive(Clone, Debug, Default)]
pub struct FetchStats {
    /// HTTP requests made (metadata + packages).
    pub requests: usize,
    /// Packages downloaded.
    pub downloaded: usize,
    /// Bytes downloaded for packages.
    pub bytes: u64,
}

/// Makes sure every pin of `packages` is in the store: pins already there cost no request;
/// others are located through their source's repomd.xml → primary → location, downloaded and
/// verified (size + sha256). A mismatch names the package and both digests.
pub fn fetch(
    lock: &LockFile,
    packages: &[LockedPackage],
    store: &Store,
    on_progress: &mut dyn FnMut(&LockedPackage, u64),
) -> Result<(Vec<FetchedRpm>, FetchStats)> {
    let mut stats = FetchStats::default();
    let mut repos: HashMap<String, RemoteRepo> = HashMap::new();
    let agent = remote::agent();
    let mut out = Vec::new();
    // (package index, url, sha256, size) of every download, resolved in order first.
    let mut todo: Vec<(usize, String, String, u64)> = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        let (Some(sha), Some(size)) = (&p.sha256, p.size) else {
            bail!(
                "package {}: not pinned (no sha256/size); run `buildchain packaging lock`",
                p.nevra()
            );
        };
        // A blob source (remote cache) may have it: no need to ask the RPM repository then.
        store.fetch_chain(
            sha,
            Some(size),
            &format!("package {}", p.nevra()),
            &mut || Ok(0),
        )?;
        if !store.contains(sha) && !todo.iter().any(|t| &t.2 == sha) {
            let src = lock
                .source(&p.source)
                .with_context(|| format!("package {}: unknown source {:?}", p.nevra(), p.source))?;
            if !repos.contains_key(&src.name) {
                let r = remote::load_repo(&agent, &src.name, &src.baseurl)
                    .with_context(|| format!("package {}", p.nevra()))?;
                stats.requests += 2;
                repos.insert(src.name.clone(), r);
            }
            let repo = &repos[&src.name];
            let want = Evr::parse(&p.evr);
            let Some(rp) = repo
                .packages
                .iter()
                .find(|x| x.name == p.name && x.arch == p.arch && x.evr == want)
            else {
                bail!(
                    "package {}: not found in source {} ({}); the lock may be out of date",
                    p.nevra(),
                    src.name,
                    src.baseurl
                );
            };
            if rp.checksum_type == "sha256" && &rp.checksum != sha {
                bail!(
                    "package {}: source {} now lists sha256:{} but the lock pins sha256:{sha}; \
                     refusing (re-run the lock command if the change is expected)",
                    p.nevra(),
                    src.name,
                    rp.checksum
                );
            }
            // Refused before any byte is fetched (free space, BUILDCHAIN_MAX_BLOB_BYTES).
            store.check_room(
                &format!("package {} sha256:{sha}", p.nevra()),
                size,
                crate::images::registry::ClientOptions::default().max_blob_bytes,
            )?;
            todo.push((
                i,
                remote::join_url(&repo.baseurl, &rp.href),
                sha.clone(),
                size,
            ));
        }
        out.push(FetchedRpm {
            package: p.clone(),
            sha256: sha.clone(),
        });
    }
    // Downloads in parallel (`BUILDCHAIN_FETCH_JOBS`, default 8); results reported in lock
    // order, the first failure (in that order) is the error.
    let jobs = std::env::var("BUILDCHAIN_FETCH_JOBS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(8)
        .clamp(1, 64);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results: std::sync::Mutex<Vec<(usize, Result<u64>)>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(todo.len()) {
            scope.spawn(|| loop {
                use std::sync::atomic::Ordering::SeqCst;
                let k = next.fetch_add(1, SeqCst);
                if k >= todo.len() || failed.load(SeqCst) {
                    break;
                }
                let (i, url, sha, size) = &todo[k];
                let p = &packages[*i];
                let r = remote::http_stream(&agent, url)
                    .with_context(|| format!("package {}", p.nevra()))
                    .and_then(|mut body| {
                        let what = format!("package {} ({url})", p.nevra());
                        store.put_verified(sha, Some(*size), &mut body, &what)
                    });
                if r.is_err() {
                    failed.store(true, SeqCst);
                }
                if let Ok(mut v) = results.lock() {
                    v.push((k, r));
                }
            });
        }
    });
    let mut results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("fetch results lock poisoned"))?;
    results.sort_by_key(|r| r.0);
    for (k, r) in results {
        let n = r?;
        stats.requests += 1;
        stats.downloaded += 1;
        stats.bytes += n;
        on_progress(&packages[todo[k].0], n);
    }
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, evr: &str, prov: &[&str], req: &[&str]) -> RemotePackage {
        let d = |n: &&str| RemoteDep {
            name: n.to_string(),
            flags: String::new(),
            evr: None,
        };
        RemotePackage {
            name: name.into(),
            arch: "x86_64".into(),
            evr: Evr::parse(evr),
            checksum_type: "sha256".into(),
            checksum: "0".repeat(64),
            size: 1,
            href: format!("{name}.rpm"),
            provides: prov.iter().map(d).collect(),
            requires: req.iter().map(d).collect(),
            files: vec![],
        }
    }

    #[test]
    fn lock_yaml_round_trips() {
        let l = LockFile {
            sources: vec![Source {
                name: "k8s".into(),
                baseurl: "https://example.invalid/rpm/".into(),
                repository: "kubernetes".into(),
            }],
            packages: vec![LockedPackage {
                name: "kubelet".into(),
                evr: "0:1.30.1-1".into(),
                arch: "x86_64".into(),
                sha256: Some("a".repeat(64)),
                size: Some(123),
                source: "k8s".into(),
            }],
        };
        let y = l.to_yaml().unwrap();
        let back: LockFile = crate::yamlerr::parse_yaml(&y, "lock.yaml").unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn newest_and_recursive() {
        let repo = RemoteRepo {
            name: "up".into(),
            baseurl: "http://x".into(),
            packages: vec![
                pkg("a", "1.9-1", &["a"], &["libb"]),
                pkg("a", "1.10-1", &["a"], &["libb", "glibc"]),
                pkg("b", "2-1", &["b", "libb"], &["c"]),
                pkg("c", "1-1", &["c"], &[]),
                pkg("d", "1-1", &["d"], &[]),
            ],
        };
        let req = LockRequest {
            sources: vec![Source {
                name: "up".into(),
                baseurl: "http://x".into(),
                repository: "up".into(),
            }],
            arches: default_arches(),
            packages: vec![Request {
                name: "a".into(),
                source: None,
                version: None,
                resolve: true,
            }],
        };
        let r = resolve(&req, &[repo]).unwrap();
        let got: Vec<String> = r
            .lock
            .packages
            .iter()
            .map(|p| format!("{}-{}", p.name, p.evr))
            .collect();
        assert_eq!(got, ["a-0:1.10-1", "b-0:2-1", "c-0:1-1"]);
        assert_eq!(
            r.unresolved,
            [("glibc".to_string(), "a-1.10-1.x86_64".to_string())]
        );
        assert!(version_matches("1.30.1", "1.30"));
        assert!(!version_matches("1.300.1", "1.30"));
    }
}
