//! The completeness gate (SPEC §12): nothing the medium ships references something it does not
//! ship.
//!
//! - **Images**: every container image referenced by the shipped text files is served by the
//!   medium's registry. References are found literally, line by line:
//!   - `image:` fields (YAML keys, with or without a list dash, quoted or not);
//!   - `metalk8s-registry-from-config.invalid/<prefix>/<name>:<tag>` strings anywhere.
//!
//!   Limits: a reference whose name or tag is built by Jinja (`{{ … }}`, `{% … %}`) is skipped,
//!   except that a Jinja registry prefix (`{{ repo }}/name:tag`) is dropped and the rest checked;
//!   digest references (`name@sha256:…`) are checked by name only.
//! - **RPMs**: every `Requires` of every shipped RPM is provided by a shipped RPM (a `Provides`
//!   whose version range overlaps, or a file path it ships) or by the declared base-OS provides
//!   ([`BASE_OS_PROVIDES`]); `rpmlib(…)` requires are implicit.
//!
//! Both checks take plain data, so the build gate (on the tree) and `verify` (on data captured
//! while streaming the medium) share them.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};

use crate::packaging::evr::Evr;

/// Host name of image references resolved from the cluster configuration.
pub const FROM_CONFIG_HOST: &str = "metalk8s-registry-from-config.invalid";
/// The declared base-OS provides, relative to the repository root.
pub const BASE_OS_PROVIDES: &str = "packages/redhat/8/base-os-provides.txt";

/// One dangling reference.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dangling {
    /// Stable code: `IMAGE_NOT_SERVED` or `RPM_REQUIRE_UNRESOLVED`.
    pub code: &'static str,
    /// The referencing file (tree-relative).
    pub path: String,
    /// 1-based line of the reference (0 for RPM headers).
    pub line: usize,
    /// Explanation.
    pub message: String,
}

impl std::fmt::Display for Dangling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.path, self.line, self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// An image reference found in a text file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// 1-based line.
    pub line: usize,
    /// The reference as written.
    pub text: String,
    /// Candidate repository names (after dropping registry / prefix components).
    pub names: Vec<String>,
    /// Tag, when the reference has one (`None` for digests).
    pub tag: Option<String>,
}

/// Whether a file is scanned for image references (YAML, Salt, Jinja and JSON sources).
pub fn is_scanned(path: &str) -> bool {
    let top = path.split('/').next().unwrap_or_default();
    let ext_ok = [
        ".sls", ".yaml", ".yml", ".j2", ".jinja", ".json", ".in", ".tpl",
    ]
    .iter()
    .any(|e| path.ends_with(e));
    matches!(top, "salt" | "pillar" | "operator") && ext_ok
}

fn has_jinja(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("}}")
}

/// Splits `repo[:tag]` / `repo@digest` into (repository path, tag).
fn split_ref(s: &str) -> Option<(String, Option<String>)> {
    if let Some((repo, _digest)) = s.split_once('@') {
        return Some((repo.to_string(), None));
    }
    let slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
    match s[slash..].rfind(':') {
        Some(i) => Some((
            s[..slash + i].to_string(),
            Some(s[slash + i + 1..].to_string()),
        )),
        None => Some((s.to_string(), Some("latest".to_string()))),
    }
}

fn make_ref(line: usize, text: &str) -> Option<ImageRef> {
    let mut t = text;
    // A Jinja registry/prefix part is dropped: `{{ repo }}/name:tag` → `name:tag`.
    if let Some(i) = t.rfind("}}") {
        let rest = &t[i + 2..];
        t = rest.strip_prefix('/')?;
    }
    if t.is_empty() || has_jinja(t) || t.contains(char::is_whitespace) {
        return None;
    }
    let (repo, tag) = split_ref(t)?;
    let comps: Vec<&str> = repo.split('/').collect();
    if comps.iter().any(|c| c.is_empty()) {
        return None;
    }
    let mut names = Vec::new();
    if comps.first() == Some(&FROM_CONFIG_HOST) {
        // host/<prefix>/<name…>
        if comps.len() >= 3 {
            names.push(comps[2..].join("/"));
        }
    } else {
        for skip in 0..comps.len() {
            names.push(comps[skip..].join("/"));
        }
    }
    (!names.is_empty()).then(|| ImageRef {
        line,
        text: text.to_string(),
        names,
        tag,
    })
}

/// Every image reference of a text (see the module doc for what is recognised).
pub fn scan_image_refs(text: &str) -> Vec<ImageRef> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let mut seen_from_config = false;
        let trimmed = raw.trim_start().trim_start_matches("- ").trim_start();
        if let Some(v) = trimmed
            .strip_prefix("image:")
            .or_else(|| trimmed.strip_prefix("\"image\":"))
        {
            let v = v.split(" #").next().unwrap_or_default().trim();
            let v = v
                .trim_end_matches(',')
                .trim_matches(|c| c == '"' || c == '\'');
            if !v.is_empty() {
                seen_from_config = v.contains(FROM_CONFIG_HOST);
                if let Some(r) = make_ref(line, v) {
                    out.push(r);
                }
            }
        }
        if seen_from_config {
            continue;
        }
        let mut rest = raw;
        while let Some(i) = rest.find(FROM_CONFIG_HOST) {
            let s = &rest[i..];
            let end = s
                .find(|c: char| c.is_whitespace() || "\"'`,;)]<>".contains(c))
                .unwrap_or(s.len());
            // Keep a Jinja expression that is part of the reference (`…/{{ x }}/name:tag`).
            let mut cand = &s[..end];
            if s[end..].starts_with(' ') && has_jinja(cand) && cand.ends_with("{{") {
                if let Some(close) = s.find("}}") {
                    let tail_end = s[close..]
                        .find(|c: char| c.is_whitespace() || "\"'`,;)]<>".contains(c))
                        .map(|x| close + x)
                        .unwrap_or(s.len());
                    cand = &s[..tail_end];
                }
            }
            if let Some(r) = make_ref(line, cand) {
                out.push(r);
            }
            rest = &s[cand.len().max(1)..];
        }
    }
    out
}

/// Images served by a medium: (name, tag) pairs, names without the registry prefix.
#[derive(Clone, Debug, Default)]
pub struct Served {
    /// name → tags.
    pub images: BTreeMap<String, BTreeSet<String>>,
}

impl Served {
    /// Adds `name:tag`.
    pub fn add(&mut self, name: &str, tag: &str) {
        self.images
            .entry(name.to_string())
            .or_default()
            .insert(tag.to_string());
    }

    /// Whether `r` is served.
    pub fn serves(&self, r: &ImageRef) -> bool {
        r.names.iter().any(|n| match (self.images.get(n), &r.tag) {
            (Some(tags), Some(t)) => tags.contains(t),
            (Some(_), None) => true,
            (None, _) => false,
        })
    }

    /// The images of an `images/` tree listing: `images/<name…>/<tag>/manifest.json` paths.
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Served {
        let mut s = Served::default();
        for p in paths {
            if let Some(d) = p
                .strip_prefix("images/")
                .and_then(|p| p.strip_suffix("/manifest.json"))
            {
                if let Some((n, t)) = d.rsplit_once('/') {
                    s.add(n, t);
                }
            }
        }
        s
    }

    /// Keeps only the images the nginx include serves
    /// (`location = "/v2/<prefix><name>/manifests/<tag>"`; an empty `prefix` drops the first
    /// path component, whatever it is).
    pub fn restrict_to_include(&self, include: &str, prefix: &str) -> Served {
        let mut located: BTreeSet<(String, String)> = BTreeSet::new();
        for l in include.lines() {
            let Some(rest) = l.trim().strip_prefix("location = \"/v2/") else {
                continue;
            };
            let Some(path) = rest.split('"').next() else {
                continue;
            };
            if let Some((repo, tag)) = path.rsplit_once("/manifests/") {
                if !tag.starts_with("sha256:") {
                    let name = if prefix.is_empty() {
                        repo.split_once('/').map(|(_, n)| n).unwrap_or(repo)
                    } else {
                        repo.strip_prefix(prefix).unwrap_or(repo)
                    };
                    located.insert((name.to_string(), tag.to_string()));
                }
            }
        }
        let mut out = Served::default();
        for (n, tags) in &self.images {
            for t in tags {
                if located.contains(&(n.clone(), t.clone())) {
                    out.add(n, t);
                }
            }
        }
        out
    }
}

/// Checks the image references of `files` (path, text) against `served`.
pub fn check_images<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
    served: &Served,
    served_by: &str,
) -> Vec<Dangling> {
    let mut out = Vec::new();
    for (path, text) in files {
        for r in scan_image_refs(text) {
            if !served.serves(&r) {
                out.push(Dangling {
                    code: "IMAGE_NOT_SERVED",
                    path: path.to_string(),
                    line: r.line,
                    message: format!("image {} is not served by {served_by}", r.text),
                });
            }
        }
    }
    out.sort();
    out
}

/// An RPM dependency (`name [op evr]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dep {
    /// Name.
    pub name: String,
    /// `LT`/`GT`/`EQ` bits as rpm stores them (2, 4, 8).
    pub flags: u32,
    /// `[E:]V[-R]`, empty when unversioned.
    pub version: String,
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.flags & 0xe {
            2 => "<",
            4 => ">",
            8 => "=",
            10 => "<=",
            12 => ">=",
            _ => "",
        };
        if op.is_empty() || self.version.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{} {op} {}", self.name, self.version)
        }
    }
}

/// What the closure check needs from an RPM.
#[derive(Clone, Debug, Default)]
pub struct RpmDeps {
    /// Path of the `.rpm` in the tree.
    pub path: String,
    /// `name-[e:]v-r.arch`.
    pub nevra: String,
    /// Provides (the package's own `name = evr` included when the header has it).
    pub provides: Vec<Dep>,
    /// Requires.
    pub requires: Vec<Dep>,
    /// Every file path it installs.
    pub files: Vec<String>,
}

impl RpmDeps {
    /// Reads the dependencies from a parsed header.
    pub fn from_metadata(path: &str, md: &rpm::PackageMetadata) -> Result<RpmDeps> {
        use rpm::IndexTag as T;
        let h = &md.header;
        let deps = |n: T, f: T, v: T| -> Vec<Dep> {
            let (Ok(n), Ok(f), Ok(v)) = (
                h.get_entry_data_as_string_array(n),
                h.get_entry_data_as_u32_array(f),
                h.get_entry_data_as_string_array(v),
            ) else {
                return Vec::new();
            };
            n.iter()
                .zip(f.iter())
                .zip(v.iter())
                .map(|((n, f), v)| Dep {
                    name: n.to_string(),
                    flags: *f,
                    version: v.to_string(),
                })
                .collect()
        };
        let name = md.get_name()?.to_string();
        let epoch = md.get_epoch().unwrap_or(0);
        let evr = if epoch > 0 {
            format!("{epoch}:{}-{}", md.get_version()?, md.get_release()?)
        } else {
            format!("{}-{}", md.get_version()?, md.get_release()?)
        };
        let arch = md.get_arch().unwrap_or("noarch");
        let mut provides = deps(
            T::RPMTAG_PROVIDENAME,
            T::RPMTAG_PROVIDEFLAGS,
            T::RPMTAG_PROVIDEVERSION,
        );
        if !provides.iter().any(|p| p.name == name) {
            provides.push(Dep {
                name: name.clone(),
                flags: 8,
                version: evr.clone(),
            });
        }
        let files = md
            .get_file_paths()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        Ok(RpmDeps {
            path: path.to_string(),
            nevra: format!("{name}-{evr}.{arch}"),
            provides,
            requires: deps(
                T::RPMTAG_REQUIRENAME,
                T::RPMTAG_REQUIREFLAGS,
                T::RPMTAG_REQUIREVERSION,
            ),
            files,
        })
    }
}

/// Whether two version ranges overlap (rpm's `rpmdsCompare` semantics, simplified to E:V-R with
/// an empty release matching any release).
pub fn ranges_overlap(a: &Dep, b: &Dep) -> bool {
    let (fa, fb) = (a.flags & 0xe, b.flags & 0xe);
    if fa == 0 || fb == 0 || a.version.is_empty() || b.version.is_empty() {
        return true;
    }
    let (mut ea, mut eb) = (Evr::parse(&a.version), Evr::parse(&b.version));
    if ea.release.is_empty() || eb.release.is_empty() {
        ea.release.clear();
        eb.release.clear();
    }
    match ea.cmp(&eb) {
        Ordering::Less => fa & 4 != 0 || fb & 2 != 0,
        Ordering::Greater => fa & 2 != 0 || fb & 4 != 0,
        Ordering::Equal => (fa & fb & 0xe) != 0 && ((fa & 8 != 0 && fb & 8 != 0) || fa == fb),
    }
}

/// Parses the base-OS provides list: one `name` per line, `#` comments and blank lines ignored.
pub fn parse_base_provides(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

/// Loads [`BASE_OS_PROVIDES`] under `repo_root`.
pub fn load_base_provides(repo_root: &Path) -> Result<BTreeSet<String>> {
    let p = repo_root.join(BASE_OS_PROVIDES);
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok(parse_base_provides(&text))
}

/// The RPM dependency closure: every unresolved `Requires`.
pub fn check_rpm_closure(rpms: &[RpmDeps], base: &BTreeSet<String>) -> Vec<Dangling> {
    let mut provides: BTreeMap<&str, Vec<&Dep>> = BTreeMap::new();
    let mut files: BTreeSet<&str> = BTreeSet::new();
    for r in rpms {
        for p in &r.provides {
            provides.entry(p.name.as_str()).or_default().push(p);
        }
        files.extend(r.files.iter().map(String::as_str));
    }
    let mut out = Vec::new();
    for r in rpms {
        for req in &r.requires {
            if req.name.starts_with("rpmlib(") || base.contains(&req.name) {
                continue;
            }
            let by_provide = provides
                .get(req.name.as_str())
                .is_some_and(|ps| ps.iter().any(|p| ranges_overlap(p, req)));
            let by_file = req.name.starts_with('/') && files.contains(req.name.as_str());
            if !by_provide && !by_file {
                out.push(Dangling {
                    code: "RPM_REQUIRE_UNRESOLVED",
                    path: r.path.clone(),
                    line: 0,
                    message: format!(
                        "{} requires {req}, provided by no shipped RPM nor by {BASE_OS_PROVIDES}",
                        r.nevra
                    ),
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Where the product's registry include lives in the ISO tree.
pub const REGISTRY_INCLUDE: &str = "salt/metalk8s/repo/files/metalk8s-registry.inc";

/// Runs both checks on an ISO tree on disk: image references of `salt/`, `pillar/` and
/// `operator/` against `images/` as served by [`REGISTRY_INCLUDE`] (when present; `prefix` is
/// the repository prefix it uses, `metalk8s-<version>/`), and the closure of every RPM under
/// `packages/` with `base` as base-OS provides.
pub fn check_tree(root: &Path, prefix: &str, base: &BTreeSet<String>) -> Result<Vec<Dangling>> {
    let listing = crate::engine::signature::walk_tree(root)?;
    check_tree_in(root, &listing, prefix, base)
}

/// [`check_tree`] over a listing of the tree already taken (`walk_tree` order; symlinks in it
/// are skipped).
pub fn check_tree_in(
    root: &Path,
    listing: &[std::path::PathBuf],
    prefix: &str,
    base: &BTreeSet<String>,
) -> Result<Vec<Dangling>> {
    let mut texts: Vec<(String, String)> = Vec::new();
    let mut manifests: Vec<String> = Vec::new();
    let mut rpms = Vec::new();
    for path in listing {
        let is_file = std::fs::symlink_metadata(path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .is_file();
        if !is_file {
            continue;
        }
        let rel = crate::tasks::rel_name(path, root);
        if is_scanned(&rel) {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            texts.push((rel, String::from_utf8_lossy(&bytes).into_owned()));
        } else if rel.starts_with("images/") && rel.ends_with("/manifest.json") {
            manifests.push(rel);
        } else if rel.starts_with("packages/") && rel.ends_with(".rpm") {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let md = rpm::PackageMetadata::parse(&mut std::io::BufReader::new(f))
                .with_context(|| format!("{}: not a readable RPM", path.display()))?;
            rpms.push(RpmDeps::from_metadata(&rel, &md)?);
        }
    }
    let mut served = Served::from_paths(manifests.iter().map(String::as_str));
    let inc = root.join(REGISTRY_INCLUDE);
    let what = if inc.is_file() {
        let text = std::fs::read_to_string(&inc)
            .with_context(|| format!("cannot read {}", inc.display()))?;
        served = served.restrict_to_include(&text, prefix);
        format!("the ISO's registry ({REGISTRY_INCLUDE})")
    } else {
        "the ISO's images/".to_string()
    };
    let mut out = check_images(
        texts.iter().map(|(p, t)| (p.as_str(), t.as_str())),
        &served,
        &what,
    );
    out.extend(check_rpm_closure(&rpms, base));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<(usize, Vec<String>, Option<String>)> {
        scan_image_refs(text)
            .into_iter()
            .map(|r| (r.line, r.names, r.tag))
            .collect()
    }

    #[test]
    fn image_fields_and_from_config_strings() {
        let text = "kind: Pod\nspec:\n  containers:\n    - image: metalk8s-registry-from-config.invalid/metalk8s-1.0/pause:3.9\n      name: x\n  - image: \"{{ repo }}/metalk8s-utils:1.0\"\n  image: {{ build_image_name('x') }}\nargs: [\"--img=metalk8s-registry-from-config.invalid/metalk8s-1.0/etcd:3.5\"]\n  image: docker.io/library/nginx:1.25 # comment\n";
        assert_eq!(
            names(text),
            vec![
                (4, vec!["pause".into()], Some("3.9".into())),
                (6, vec!["metalk8s-utils".into()], Some("1.0".into())),
                (8, vec!["etcd".into()], Some("3.5".into())),
                (
                    9,
                    vec![
                        "docker.io/library/nginx".into(),
                        "library/nginx".into(),
                        "nginx".into()
                    ],
                    Some("1.25".into())
                ),
            ]
        );
    }

    #[test]
    fn served_and_dangling() {
        let mut s = Served::default();
        s.add("pause", "3.9");
        let d = check_images(
            [(
                "salt/a.sls",
                "image: metalk8s-registry-from-config.invalid/m-1/pause:3.9\nimage: metalk8s-registry-from-config.invalid/m-1/gone:1.0\n",
            )],
            &s,
            "the ISO",
        );
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].to_string(),
            "salt/a.sls:2: image metalk8s-registry-from-config.invalid/m-1/gone:1.0 is not served by the ISO"
        );
    }

    #[test]
    fn version_ranges() {
        let d = |f, v: &str| Dep {
            name: "x".into(),
            flags: f,
            version: v.into(),
        };
        assert!(ranges_overlap(&d(8, "1.0-1"), &d(12, "1.0")));
        assert!(ranges_overlap(&d(8, "3.2-1"), &d(12, "3.1")));
        assert!(!ranges_overlap(&d(8, "3.0-1"), &d(12, "3.1")));
        assert!(!ranges_overlap(&d(8, "3.0"), &d(2, "3.0")));
        assert!(ranges_overlap(&d(0, ""), &d(12, "3.1")));
    }
}
