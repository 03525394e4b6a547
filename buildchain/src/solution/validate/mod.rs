//! `buildchain solution validate`: every check of SPEC §9 on a Solution ISO (made by any tool) or
//! a Solution directory.
//!
//! Findings carry a severity, a stable code, the path they concern and a message. Nothing in the
//! input can make the validator panic: every read is bounded, blobs are streamed into SHA-256,
//! and each distinct stored content (ISO extent / inode) is hashed at most once.

mod images;
mod index;
mod iso;
mod manifest;
mod operator;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::tree::{DirTree, FileTree, Kind, TreeEntry};
pub use iso::{validate_iso, validate_iso_file, validate_iso_file_with_key};
pub use report::{Finding, Report, Severity, Stats};

use images::check_images;
use index::check_content_index;
use manifest::check_manifest;
use operator::{check_operator, check_operator_images, check_registry_config};

/// `apiVersion` of a Solution manifest.
pub const API_VERSION: &str = "solutions.metalk8s.scality.com/v1alpha1";
/// Annotation holding the display name.
pub const ANNOTATION_DISPLAY_NAME: &str = "solutions.metalk8s.scality.com/display-name";

/// Largest YAML / manifest file read into memory.
const SMALL_LIMIT: u64 = 4 << 20;
/// Symlink hops followed when looking a path up.
const MAX_HOPS: usize = 16;

/// Validates `path`: a directory tree, or else an ISO image.
pub fn validate_path(path: &Path) -> Report {
    validate_path_with_key(path, None)
}

/// Like [`validate_path`]; with `key` (armored OpenPGP public key) the content index
/// `/CONTENTS.json` must be present and signed by it (`CONTENTS.json.asc`). Without a key, an
/// index that is present is checked for consistency (every file listed, sizes and digests).
pub fn validate_path_with_key(path: &Path, key: Option<&[u8]>) -> Report {
    if path.is_dir() {
        let mut t = DirTree::new(path);
        let mut r = Report {
            source: path.display().to_string(),
            ..Report::default()
        };
        check_tree_with_key(&mut t, None, key, &mut r);
        r.sort();
        return r;
    }
    match std::fs::File::open(path) {
        Ok(_) => validate_iso_file_with_key(path, key),
        Err(e) => {
            let mut r = Report {
                source: path.display().to_string(),
                ..Report::default()
            };
            r.error(
                "ISO_UNREADABLE",
                "",
                format!("cannot open {}: {e}", path.display()),
            );
            r
        }
    }
}

/// Tree index: path → entry.
struct Index {
    by_path: BTreeMap<String, TreeEntry>,
}

impl Index {
    /// Follows symlinks (inside the tree only) to the final entry.
    fn resolve(&self, path: &str) -> Option<&TreeEntry> {
        let mut p = path.to_string();
        for _ in 0..MAX_HOPS {
            let e = self.by_path.get(&p)?;
            match &e.kind {
                Kind::Symlink(t) => p = join_link(&p, t)?,
                _ => return Some(e),
            }
        }
        None
    }
    fn file(&self, path: &str) -> Option<&TreeEntry> {
        self.resolve(path).filter(|e| e.kind == Kind::File)
    }
    fn children<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = &'a TreeEntry> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.by_path
            .range(prefix.clone()..)
            .take_while({
                let p = prefix.clone();
                move |(k, _)| k.starts_with(&p)
            })
            .filter(move |(k, _)| k.len() > prefix.len() && !k[prefix.len()..].contains('/'))
            .map(|(_, v)| v)
    }
}

/// Resolves a symlink `target` relative to the link at `link` (both tree-relative); `None` when
/// it is absolute or climbs above the root.
pub fn join_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') || target.is_empty() {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn path_is_unsafe(p: &str) -> bool {
    p.is_empty()
        || p.starts_with('/')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        || p.contains('\0')
}

/// DNS-1123 label of at most 63 characters (`^(?!-)[0-9a-z-]{1,63}(?<!-)$`).
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}

/// `MAJOR.MINOR.PATCH[-pre][+build]` with numeric parts.
pub fn is_semver(s: &str) -> bool {
    let (core, rest) = match s.find(['-', '+']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let nums: Vec<&str> = core.split('.').collect();
    nums.len() == 3
        && nums
            .iter()
            .all(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()))
        && rest
            .bytes()
            .skip(1)
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'+')
        && (rest.is_empty() || rest.len() > 1)
}

fn valid_image_name(n: &str) -> bool {
    crate::registry_config::grammar::is_name(n)
}
fn valid_tag(t: &str) -> bool {
    crate::registry_config::grammar::is_tag(t)
}

/// Parses a YAML stream into JSON-like documents, refusing huge inputs.
fn yaml_docs(bytes: &[u8]) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let docs = std::panic::catch_unwind(|| serde_saphyr::from_multiple::<Option<Value>>(text))
        .map_err(|_| "YAML parser failure".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(docs.into_iter().flatten().collect())
}

struct Ctx<'a> {
    tree: &'a mut dyn FileTree,
    index: Index,
    /// identity (or path) → sha256 hex of the content, for contents hashed already.
    hashed: HashMap<String, Result<(String, u64), String>>,
}

impl Ctx<'_> {
    fn read_small(&mut self, e: &TreeEntry) -> Result<Vec<u8>, String> {
        let e = e.clone();
        self.tree
            .read_small(&e, SMALL_LIMIT)
            .map_err(|x| format!("{x:#}"))
    }

    /// SHA-256 of a file, computed once per stored content.
    fn hash(&mut self, e: &TreeEntry, stats: &mut Stats) -> Result<(String, u64), String> {
        let key = match e.identity {
            Some(id) => format!("id:{id}:{}", e.size),
            None => format!("path:{}", e.path),
        };
        if let Some(r) = self.hashed.get(&key) {
            return r.clone();
        }
        let mut w = HashWriter(Sha256::new(), 0);
        let r = self
            .tree
            .stream(e, &mut w)
            .map(|n| (hex::encode(w.0.finalize()), n))
            .map_err(|x| format!("{x:#}"));
        if let Ok((_, n)) = &r {
            stats.blobs_hashed += 1;
            stats.bytes_hashed += n;
        }
        self.hashed.insert(key, r.clone());
        r
    }
}

struct HashWriter(Sha256, u64);
impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the manifest says.
#[derive(Default)]
struct Sol {
    name: Option<String>,
    version: Option<String>,
    display: Option<String>,
    images: Option<Vec<(String, String)>>,
    operator: Option<(String, String)>,
}

/// Runs every tree-level check (everything but the ISO container checks).
pub fn check_tree(tree: &mut dyn FileTree, volume_id: Option<&str>, rep: &mut Report) {
    check_tree_with_key(tree, volume_id, None, rep)
}

/// [`check_tree`] with the content-index checks bound to `key` (see [`validate_path_with_key`]).
pub fn check_tree_with_key(
    tree: &mut dyn FileTree,
    volume_id: Option<&str>,
    key: Option<&[u8]>,
    rep: &mut Report,
) {
    let entries = match tree.entries() {
        Ok(e) => e,
        Err(e) => {
            rep.error("ISO_MALFORMED", "", format!("cannot list the tree: {e:#}"));
            return;
        }
    };
    rep.stats.entries = entries.len() as u64;
    let mut by_path = BTreeMap::new();
    for e in entries {
        if path_is_unsafe(&e.path) {
            rep.error(
                "UNSAFE_PATH",
                &e.path,
                "absolute, empty, `.` or `..` path component",
            );
            continue;
        }
        match &e.kind {
            Kind::Other => rep.error(
                "SPECIAL_FILE",
                &e.path,
                "device, FIFO or socket: only files, directories and symlinks are allowed",
            ),
            Kind::Symlink(t) if join_link(&e.path, t).is_none() => rep.error(
                "SYMLINK_ESCAPES",
                &e.path,
                format!("symlink to {t:?} points outside the Solution"),
            ),
            _ => {}
        }
        if by_path.contains_key(&e.path) {
            rep.error("DUPLICATE_PATH", &e.path, "listed twice in the tree");
            continue;
        }
        by_path.insert(e.path.clone(), e);
    }
    let mut cx = Ctx {
        tree,
        index: Index { by_path },
        hashed: HashMap::new(),
    };
    let sol = check_manifest(&mut cx, volume_id, rep);
    rep.name = sol.name.clone();
    rep.version = sol.version.clone();
    let found = check_images(&mut cx, &sol, rep);
    check_operator(&mut cx, rep);
    check_operator_images(&mut cx, &found, rep);
    check_registry_config(&mut cx, &found, rep);
    check_content_index(&mut cx, key, rep);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_versions_links() {
        assert!(is_dns1123_label("example-solution"));
        assert!(is_dns1123_label(&"a".repeat(63)));
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        for good in ["1.0.0", "1.2.3-dev", "10.0.1-rc.1+build.5"] {
            assert!(is_semver(good), "{good}");
        }
        for bad in ["1.0", "1.0.0-", "v1.0.0", "1.0.x", "1..0", ""] {
            assert!(!is_semver(bad), "{bad}");
        }
        assert_eq!(join_link("a/b/l", "../c").as_deref(), Some("a/c"));
        assert_eq!(join_link("l", "x/./y").as_deref(), Some("x/y"));
        assert_eq!(join_link("a/l", "../../etc/passwd"), None);
        assert_eq!(join_link("a/l", "/etc/passwd"), None);
    }
}
