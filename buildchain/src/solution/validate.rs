//! `buildchain solution validate`: every check of SPEC §9 on a Solution ISO (made by any tool) or
//! a Solution directory.
//!
//! Findings carry a severity, a stable code, the path they concern and a message. Nothing in the
//! input can make the validator panic: every read is bounded, blobs are streamed into SHA-256,
//! and each distinct stored content (ISO extent / inode) is hashed at most once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::tree::{DirTree, FileTree, IsoTree, Kind, TreeEntry};

/// `apiVersion` of a Solution manifest.
pub const API_VERSION: &str = "solutions.metalk8s.scality.com/v1alpha1";
/// Annotation holding the display name.
pub const ANNOTATION_DISPLAY_NAME: &str = "solutions.metalk8s.scality.com/display-name";

/// Largest YAML / manifest file read into memory.
const SMALL_LIMIT: u64 = 4 << 20;
/// Symlink hops followed when looking a path up.
const MAX_HOPS: usize = 16;

/// Severity of a [`Finding`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The Solution must not be imported.
    Error,
    /// Suspicious but accepted by MetalK8s.
    Warning,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// error | warning.
    pub severity: Severity,
    /// Stable code (`MANIFEST_MISSING`, `BLOB_DIGEST_MISMATCH`…).
    pub code: &'static str,
    /// Path in the tree (`/` for the whole image).
    pub path: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Counters of a validation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Entries in the tree.
    pub entries: u64,
    /// Images (`images/<name>/<tag>/`) found.
    pub images: u64,
    /// Blob references checked (config + layers of every manifest).
    pub blob_refs: u64,
    /// Distinct stored contents hashed.
    pub blobs_hashed: u64,
    /// Bytes hashed.
    pub bytes_hashed: u64,
}

/// Result of a validation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// What was validated.
    pub source: String,
    /// ISO volume identifier, if an ISO.
    pub volume_id: Option<String>,
    /// `metadata.name` of the manifest, when readable.
    pub name: Option<String>,
    /// `spec.version` of the manifest, when readable.
    pub version: Option<String>,
    /// isomd5sum verdict: `pass`, `fail`, `not-implanted`, `error` (ISOs only).
    pub md5: Option<String>,
    /// Counters.
    pub stats: Stats,
    /// Every finding, errors first then by path.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }
    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.findings.len() - self.errors()
    }
    /// Whether there is at least one finding with `code`.
    pub fn has(&self, code: &str) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }
    fn push(&mut self, severity: Severity, code: &'static str, path: &str, message: String) {
        self.findings.push(Finding {
            severity,
            code,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
            message,
        });
    }
    pub(crate) fn error(&mut self, code: &'static str, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, code, path, message.into());
    }
    pub(crate) fn warn(&mut self, code: &'static str, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, code, path, message.into());
    }

    /// Text rendering: one line per finding, then a summary line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for f in &self.findings {
            let sev = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            s.push_str(&format!("{sev}: {} {}: {}\n", f.code, f.path, f.message));
        }
        s.push_str(&format!(
            "{}: {} {} — {} error(s), {} warning(s); {} image(s), {} blob reference(s), {} distinct blob(s) hashed ({} bytes){}\n",
            self.source,
            self.name.as_deref().unwrap_or("?"),
            self.version.as_deref().unwrap_or("?"),
            self.errors(),
            self.warnings(),
            self.stats.images,
            self.stats.blob_refs,
            self.stats.blobs_hashed,
            self.stats.bytes_hashed,
            self.md5.as_deref().map(|m| format!("; md5: {m}")).unwrap_or_default(),
        ));
        s
    }

    /// JSON rendering (`ok`, counts, findings, stats).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("ok".into(), Value::Bool(self.errors() == 0));
            o.insert("errors".into(), self.errors().into());
            o.insert("warnings".into(), self.warnings().into());
        }
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    }

    pub(crate) fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            (a.severity, &a.path, a.code, &a.message)
                .cmp(&(b.severity, &b.path, b.code, &b.message))
        });
        self.findings.dedup();
    }
}

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

/// Validates an ISO image read from `r`; `source` names it in the report.
pub fn validate_iso<R: Read + Seek>(mut r: R, source: &str) -> Report {
    let mut rep = Report {
        source: source.to_string(),
        ..Report::default()
    };
    md5_part(&mut r, &mut rep);
    structure_part(r, None, &mut rep);
    rep.sort();
    rep
}

/// Validates the ISO file at `path`, checking the implanted MD5 on a second handle in a parallel
/// thread while the tree is checked.
pub fn validate_iso_file(path: &Path) -> Report {
    validate_iso_file_with_key(path, None)
}

/// [`validate_iso_file`] with the index signature checked against `key` (see
/// [`validate_path_with_key`]).
pub fn validate_iso_file_with_key(path: &Path, key: Option<&[u8]>) -> Report {
    let mut rep = Report {
        source: path.display().to_string(),
        ..Report::default()
    };
    let open =
        |p: &Path| std::fs::File::open(p).map(|f| std::io::BufReader::with_capacity(1 << 20, f));
    let (f1, f2) = match (open(path), open(path)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            rep.error(
                "ISO_UNREADABLE",
                "",
                format!("cannot open {}: {e}", path.display()),
            );
            return rep;
        }
    };
    let md5 = std::thread::scope(|s| {
        let h = s.spawn(move || {
            let mut m = Report::default();
            let mut f2 = f2;
            md5_part(&mut f2, &mut m);
            m
        });
        structure_part(f1, key, &mut rep);
        h.join()
    });
    match md5 {
        Ok(m) => {
            rep.md5 = m.md5;
            rep.findings.extend(m.findings);
        }
        Err(_) => rep.error("MD5_CHECK_FAILED", "", "the MD5 check failed unexpectedly"),
    }
    rep.sort();
    rep
}

/// isomd5sum verdict (reads the whole image once).
fn md5_part<R: Read + Seek>(r: &mut R, rep: &mut Report) {
    match iso9660_writer::md5sum::check_reader(r) {
        Ok(c) => {
            use iso9660_writer::CheckStatus;
            rep.md5 = Some(
                match c.status {
                    CheckStatus::Pass => "pass",
                    CheckStatus::Fail => {
                        rep.error(
                            "MD5_MISMATCH",
                            "",
                            format!(
                                "implanted MD5 {} does not match the image{}",
                                c.expected_md5.as_deref().unwrap_or("?"),
                                c.failed_fragment
                                    .map(|f| format!(" (fragment {f} differs)"))
                                    .unwrap_or_else(|| c
                                        .computed_md5
                                        .map(|m| format!(" (computed {m})"))
                                        .unwrap_or_default())
                            ),
                        );
                        "fail"
                    }
                    CheckStatus::NotImplanted => "not-implanted",
                }
                .to_string(),
            );
        }
        Err(e) => {
            rep.md5 = Some("error".into());
            rep.error(
                "MD5_CHECK_FAILED",
                "",
                format!("cannot check the implanted MD5: {e}"),
            );
        }
    }
}

/// Container and tree checks.
fn structure_part<R: Read + Seek>(mut r: R, key: Option<&[u8]>, rep: &mut Report) {
    let len = r.seek(std::io::SeekFrom::End(0)).unwrap_or(0);
    if r.seek(std::io::SeekFrom::Start(0)).is_err() {
        rep.error("ISO_UNREADABLE", "", "cannot seek in the image");
        return;
    }
    let mut tree = match IsoTree::from_reader(r) {
        Ok(t) => t,
        Err(e) => {
            rep.error(
                "ISO_UNREADABLE",
                "",
                format!("not a readable ISO-9660 image: {e:#}"),
            );
            return;
        }
    };
    let sectors = tree.reader.volume_sectors() as u64;
    if sectors * 2048 > len {
        rep.error(
            "ISO_TRUNCATED",
            "",
            format!(
                "the volume is {} bytes ({sectors} sectors) but the file holds only {len} bytes",
                sectors * 2048
            ),
        );
    }
    if !tree.reader.has_rock_ridge() {
        rep.error(
            "NO_ROCK_RIDGE",
            "",
            format!(
                "the image has no Rock Ridge extensions (names read from {})",
                if tree.reader.has_joliet() {
                    "Joliet"
                } else {
                    "the plain ISO-9660 tree"
                }
            ),
        );
    }
    let vol = tree.reader.volume_id().to_string();
    rep.volume_id = Some(vol.clone());
    // MetalK8s reads the manifest with `isoinfo -x /MANIFEST.YAML;1` (primary names).
    match tree.plain_paths() {
        Ok(p) => {
            if !p.iter().any(|p| p == "MANIFEST.YAML") && tree.reader.has_rock_ridge() {
                let seen = p
                    .iter()
                    .find(|p| p.starts_with("MANIFEST"))
                    .map(|p| format!(" (found {p:?})"))
                    .unwrap_or_default();
                rep.warn(
                    "MANIFEST_PRIMARY_NAME",
                    "MANIFEST.YAML;1",
                    format!("no MANIFEST.YAML;1 in the primary ISO-9660 tree{seen}: MetalK8s reads the manifest with `isoinfo -x /MANIFEST.YAML;1`; master with full ISO-9660 file names (mkisofs -l / --full-iso9660-filenames)"),
                );
            }
        }
        Err(e) => rep.error(
            "ISO_MALFORMED",
            "",
            format!("cannot walk the primary tree: {e:#}"),
        ),
    }
    check_tree_with_key(&mut tree, Some(&vol), key, rep);
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

/// Completeness of the operator manifests: every `image:` they reference is on the Solution
/// (see [`crate::trust::completeness`] for what is recognised).
fn check_operator_images(
    cx: &mut Ctx,
    found: &BTreeMap<String, BTreeSet<String>>,
    rep: &mut Report,
) {
    let mut served = crate::trust::completeness::Served::default();
    for (n, tags) in found {
        for t in tags {
            served.add(n, t);
        }
    }
    let files: Vec<TreeEntry> = cx
        .index
        .by_path
        .values()
        .filter(|e| e.kind == Kind::File && e.path.starts_with("operator/"))
        .filter(|e| crate::trust::completeness::is_scanned(&e.path))
        .cloned()
        .collect();
    for e in files {
        let Ok(bytes) = cx.read_small(&e) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for d in crate::trust::completeness::check_images(
            [(e.path.as_str(), text.as_ref())],
            &served,
            "the Solution's images/",
        ) {
            rep.error(d.code, &d.path, d.to_string());
        }
    }
}

/// The content index: signature (with a key), then every file against it. Contents already
/// hashed for the image checks are not read again.
fn check_content_index(cx: &mut Ctx, key: Option<&[u8]>, rep: &mut Report) {
    use crate::trust::contents::{ContentIndex, CONTENTS_FILE, CONTENTS_SIGNATURE_FILE};
    let Some(e) = cx.index.file(CONTENTS_FILE).cloned() else {
        // Solutions made by other tools have no index: only a key makes it mandatory.
        if key.is_some() {
            rep.error(
                "INDEX_MISSING",
                CONTENTS_FILE,
                "no /CONTENTS.json content index",
            );
        }
        return;
    };
    let bytes = match cx.read_small(&e) {
        Ok(b) => b,
        Err(x) => {
            rep.error("INDEX_INVALID", CONTENTS_FILE, x);
            return;
        }
    };
    // Without a key the index is checked for consistency only (`buildchain verify` warns
    // about it; `solution validate` stays quiet so that a clean Solution has no finding).
    if let Some(k) = key {
        match cx.index.file(CONTENTS_SIGNATURE_FILE).cloned() {
            None => rep.error(
                "INDEX_SIGNATURE_MISSING",
                CONTENTS_SIGNATURE_FILE,
                "no detached signature of the index",
            ),
            Some(se) => match cx.read_small(&se) {
                Ok(asc) => {
                    if let Err(x) = crate::trust::verify::verify_detached(k, &bytes, &asc) {
                        rep.error("INDEX_SIGNATURE_INVALID", CONTENTS_SIGNATURE_FILE, x);
                    }
                }
                Err(x) => rep.error("INDEX_SIGNATURE_INVALID", CONTENTS_SIGNATURE_FILE, x),
            },
        }
    }
    let index = match ContentIndex::from_json_slice(&bytes) {
        Ok(i) => i,
        Err(x) => {
            rep.error(
                "INDEX_INVALID",
                CONTENTS_FILE,
                format!("not a content index: {x}"),
            );
            return;
        }
    };
    let listed: BTreeMap<&str, &crate::trust::contents::FileEntry> =
        index.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut work: Vec<TreeEntry> = Vec::new();
    for (p, e) in &cx.index.by_path {
        if e.kind != Kind::File || !crate::trust::index_reader::indexed(p) {
            continue;
        }
        if listed.contains_key(p.as_str()) {
            work.push(e.clone());
        } else {
            rep.error(
                "FILE_NOT_INDEXED",
                p,
                "present on the medium but not in the index",
            );
        }
    }
    for f in &index.files {
        if cx.index.file(&f.path).is_none() {
            rep.error("FILE_MISSING", &f.path, "listed in the index but absent");
        }
    }
    work.sort_by(|a, b| (a.identity, &a.path).cmp(&(b.identity, &b.path)));
    for e in work {
        let want = listed[e.path.as_str()];
        match cx.hash(&e, &mut rep.stats) {
            Ok((h, n)) => {
                if n != want.size {
                    rep.error(
                        "FILE_SIZE_MISMATCH",
                        &e.path,
                        format!("{n} bytes, the index says {}", want.size),
                    );
                } else if h != want.sha256 {
                    rep.error(
                        "FILE_DIGEST_MISMATCH",
                        &e.path,
                        format!("content has sha256 {h}, the index says {}", want.sha256),
                    );
                }
            }
            Err(x) => rep.error("FILE_UNREADABLE", &e.path, x),
        }
    }
}

fn check_manifest(cx: &mut Ctx, volume_id: Option<&str>, rep: &mut Report) -> Sol {
    let mut sol = Sol::default();
    let p = "manifest.yaml";
    let Some(e) = cx.index.file(p).cloned() else {
        rep.error(
            "MANIFEST_MISSING",
            p,
            "no manifest.yaml at the root of the Solution",
        );
        return sol;
    };
    let bytes = match cx.read_small(&e) {
        Ok(b) => b,
        Err(x) => {
            rep.error("MANIFEST_UNREADABLE", p, x);
            return sol;
        }
    };
    let docs = match yaml_docs(&bytes) {
        Ok(d) => d,
        Err(x) => {
            rep.error("MANIFEST_INVALID", p, format!("not valid YAML: {x}"));
            return sol;
        }
    };
    if docs.len() != 1 {
        rep.error(
            "MANIFEST_INVALID",
            p,
            format!("expected one YAML document, found {}", docs.len()),
        );
        return sol;
    }
    let m = &docs[0];
    if !m.is_object() {
        rep.error("MANIFEST_INVALID", p, "the manifest is not a mapping");
        return sol;
    }
    match m.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        other => rep.error(
            "MANIFEST_API_VERSION",
            p,
            format!("apiVersion is {other:?}, expected {API_VERSION:?}"),
        ),
    }
    match m.get("kind").and_then(Value::as_str) {
        Some("Solution") => {}
        other => rep.error(
            "MANIFEST_KIND",
            p,
            format!("kind is {other:?}, expected \"Solution\""),
        ),
    }
    match m.pointer("/metadata/name") {
        None | Some(Value::Null) => {
            rep.error("MANIFEST_NAME_MISSING", p, "metadata.name is missing")
        }
        Some(Value::String(n)) => {
            if !is_dns1123_label(n) {
                rep.error(
                    "MANIFEST_NAME_INVALID",
                    p,
                    format!("metadata.name {n:?} is not a DNS-1123 label of at most 63 characters"),
                );
            }
            sol.name = Some(n.clone());
        }
        Some(v) => rep.error(
            "MANIFEST_NAME_INVALID",
            p,
            format!("metadata.name {v} is not a string"),
        ),
    }
    sol.display = m
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION_DISPLAY_NAME))
        .and_then(Value::as_str)
        .map(str::to_string);
    if sol.display.is_none() {
        rep.warn(
            "MANIFEST_DISPLAY_NAME_MISSING",
            p,
            format!("no {ANNOTATION_DISPLAY_NAME} annotation"),
        );
    }
    match m.pointer("/spec/version") {
        None | Some(Value::Null) => {
            rep.error("MANIFEST_VERSION_MISSING", p, "spec.version is missing")
        }
        Some(Value::String(v)) => {
            if !is_semver(v) {
                rep.error(
                    "MANIFEST_VERSION_INVALID",
                    p,
                    format!("spec.version {v:?} is not a MAJOR.MINOR.PATCH[-pre][+build] version"),
                );
            }
            sol.version = Some(v.clone());
        }
        Some(v) => rep.error(
            "MANIFEST_VERSION_INVALID",
            p,
            format!("spec.version {v} is not a string (quote it)"),
        ),
    }
    // Operator image (MetalK8s defaults it to <name>-operator:<version>).
    match m.pointer("/spec/operator/image") {
        None | Some(Value::Null) => {
            if let (Some(n), Some(v)) = (&sol.name, &sol.version) {
                rep.warn(
                    "OPERATOR_IMAGE_DEFAULTED",
                    p,
                    format!("spec.operator.image is missing: MetalK8s uses {n}-operator:{v}"),
                );
                sol.operator = Some((format!("{n}-operator"), v.clone()));
            }
        }
        Some(img) => {
            let n = img.get("name").and_then(Value::as_str);
            let t = img.get("tag").and_then(Value::as_str);
            match (n, t) {
                (Some(n), Some(t)) if valid_image_name(n) && valid_tag(t) => {
                    sol.operator = Some((n.to_string(), t.to_string()))
                }
                _ => rep.error(
                    "MANIFEST_OPERATOR_INVALID",
                    p,
                    format!("spec.operator.image must be {{name, tag}} with a valid name and tag, found {img}"),
                ),
            }
        }
    }
    match m.pointer("/spec/images") {
        None | Some(Value::Null) => rep.warn(
            "MANIFEST_IMAGES_MISSING",
            p,
            "spec.images is missing: MetalK8s uses every images/<name>/<tag> directory",
        ),
        Some(Value::Array(list)) => {
            let mut v = Vec::new();
            let mut raw = Vec::new();
            for i in list {
                let s = i.as_str().unwrap_or_default();
                match s.rsplit_once(':') {
                    Some((n, t)) if valid_image_name(n) && valid_tag(t) => {
                        v.push((n.to_string(), t.to_string()));
                        raw.push(s.to_string());
                    }
                    _ => rep.error(
                        "MANIFEST_IMAGE_INVALID",
                        p,
                        format!("spec.images entry {i} is not a \"name:tag\" string"),
                    ),
                }
            }
            let mut sorted = raw.clone();
            sorted.sort();
            if sorted != raw {
                rep.warn("MANIFEST_IMAGES_UNSORTED", p, "spec.images is not sorted");
            }
            sorted.dedup();
            if sorted.len() != raw.len() {
                rep.warn(
                    "MANIFEST_IMAGES_DUPLICATE",
                    p,
                    "spec.images lists an image twice",
                );
            }
            sol.images = Some(v);
        }
        Some(x) => rep.error(
            "MANIFEST_INVALID",
            p,
            format!("spec.images is not a list: {x}"),
        ),
    }
    // Version consistency: volume id, operator tag.
    if let (Some(vol), Some(ver)) = (volume_id, &sol.version) {
        let last = vol.rsplit(' ').next().unwrap_or_default();
        if last.starts_with(|c: char| c.is_ascii_digit()) {
            if last != ver {
                rep.error(
                    "VERSION_MISMATCH",
                    p,
                    format!("spec.version is {ver:?} but the volume id {vol:?} says {last:?}"),
                );
            } else if let Some(d) = &sol.display {
                let want = format!("{d} {ver}");
                if vol != want && !want.starts_with(vol) {
                    rep.warn(
                        "VOLUME_ID_UNEXPECTED",
                        "",
                        format!("volume id is {vol:?}, expected {want:?}"),
                    );
                }
            }
        } else {
            rep.warn(
                "VOLUME_ID_UNEXPECTED",
                "",
                format!("volume id {vol:?} does not end with the version {ver:?}"),
            );
        }
    }
    if let (Some((on, ot)), Some(ver)) = (&sol.operator, &sol.version) {
        if ot != ver {
            rep.warn(
                "OPERATOR_TAG_VERSION_MISMATCH",
                p,
                format!("operator image {on}:{ot} is not tagged with spec.version {ver:?}"),
            );
        }
    }
    sol
}

/// Checks every image directory; returns name → tags found.
fn check_images(cx: &mut Ctx, sol: &Sol, rep: &mut Report) -> BTreeMap<String, BTreeSet<String>> {
    // An image directory is images/<name…>/<tag>/ holding manifest.json.
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let dirs: Vec<String> = cx
        .index
        .by_path
        .keys()
        .filter_map(|k| {
            k.strip_prefix("images/")?
                .strip_suffix("/manifest.json")
                .map(str::to_string)
        })
        .collect();
    for d in &dirs {
        let Some((name, tag)) = d.rsplit_once('/') else {
            rep.warn(
                "IMAGE_LAYOUT",
                &format!("images/{d}"),
                "manifest.json outside images/<name>/<tag>/",
            );
            continue;
        };
        if !valid_image_name(name) || !valid_tag(tag) {
            rep.error(
                "IMAGE_NAME_INVALID",
                &format!("images/{d}"),
                format!("{name:?}:{tag:?} is not a valid image name and tag"),
            );
            continue;
        }
        found
            .entry(name.to_string())
            .or_default()
            .insert(tag.to_string());
    }
    if cx.index.resolve("images").map(|e| &e.kind) != Some(&Kind::Dir) {
        rep.error("IMAGES_MISSING", "images", "no images/ directory");
    }
    // Wanted images.
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    if let Some(l) = &sol.images {
        wanted.extend(l.iter().cloned());
    }
    for (n, t) in &wanted {
        if !found.get(n).is_some_and(|s| s.contains(t)) {
            rep.error(
                "IMAGE_MISSING",
                &format!("images/{n}/{t}"),
                format!(
                    "{n}:{t} is listed in spec.images but images/{n}/{t}/manifest.json is absent"
                ),
            );
        }
    }
    if let Some((n, t)) = &sol.operator {
        if !found.get(n).is_some_and(|s| s.contains(t)) {
            rep.error(
                "OPERATOR_IMAGE_MISSING",
                &format!("images/{n}/{t}"),
                format!("operator image {n}:{t} is absent from images/"),
            );
        } else if sol.images.is_some() && !wanted.contains(&(n.clone(), t.clone())) {
            rep.warn(
                "OPERATOR_IMAGE_NOT_LISTED",
                "manifest.yaml",
                format!("operator image {n}:{t} is not listed in spec.images"),
            );
        }
    }
    if sol.images.is_some() {
        for (n, tags) in &found {
            for t in tags {
                let pair = (n.clone(), t.clone());
                if !wanted.contains(&pair) && sol.operator.as_ref() != Some(&pair) {
                    rep.warn(
                        "IMAGE_NOT_LISTED",
                        &format!("images/{n}/{t}"),
                        format!("{n}:{t} is on the image but not listed in spec.images"),
                    );
                }
            }
        }
    }
    rep.stats.images = found.values().map(|t| t.len() as u64).sum();
    // Blobs: collect every reference first, then hash in extent order.
    let mut refs: Vec<(
        String,
        crate::registry_config::manifest::Descriptor,
        &'static str,
    )> = Vec::new();
    for (n, tags) in &found {
        for t in tags {
            let dir = format!("images/{n}/{t}");
            if cx.index.file(&format!("{dir}/version")).is_none() {
                rep.warn(
                    "IMAGE_VERSION_FILE_MISSING",
                    &dir,
                    "no `version` file (skopeo dir: layout)",
                );
            }
            let mp = format!("{dir}/manifest.json");
            let Some(me) = cx.index.file(&mp).cloned() else {
                rep.error(
                    "IMAGE_MANIFEST_INVALID",
                    &mp,
                    "manifest.json is not a regular file",
                );
                continue;
            };
            let bytes = match cx.read_small(&me) {
                Ok(b) => b,
                Err(x) => {
                    rep.error("IMAGE_MANIFEST_INVALID", &mp, x);
                    continue;
                }
            };
            let m = match crate::registry_config::manifest::parse(&bytes) {
                Ok(m) => m,
                Err(x) => {
                    rep.error("IMAGE_MANIFEST_INVALID", &mp, format!("{x:#}"));
                    continue;
                }
            };
            let mut manifests = vec![m];
            if manifests[0].is_index() {
                let children = manifests[0].children.clone();
                for c in children {
                    let cp = format!("{dir}/{}.manifest.json", c.hex);
                    let Some(ce) = cx.index.file(&cp).cloned() else {
                        rep.error(
                            "CHILD_MANIFEST_MISSING",
                            &cp,
                            format!("child manifest sha256:{} of the index is absent", c.hex),
                        );
                        continue;
                    };
                    let cb = match cx.read_small(&ce) {
                        Ok(b) => b,
                        Err(x) => {
                            rep.error("IMAGE_MANIFEST_INVALID", &cp, x);
                            continue;
                        }
                    };
                    let h = hex::encode(Sha256::digest(&cb));
                    if h != c.hex || cb.len() as u64 != c.size {
                        rep.error(
                            "CHILD_MANIFEST_DIGEST_MISMATCH",
                            &cp,
                            format!(
                                "content is sha256:{h} ({} bytes), the index says sha256:{} ({} bytes)",
                                cb.len(),
                                c.hex,
                                c.size
                            ),
                        );
                        continue;
                    }
                    match crate::registry_config::manifest::parse(&cb) {
                        Ok(cm) if !cm.is_index() => manifests.push(cm),
                        Ok(_) => rep.error("IMAGE_MANIFEST_INVALID", &cp, "nested index"),
                        Err(x) => rep.error("IMAGE_MANIFEST_INVALID", &cp, format!("{x:#}")),
                    }
                }
            }
            for m in manifests {
                for b in m.blobs {
                    refs.push((dir.clone(), b, m.media_type));
                }
            }
        }
    }
    rep.stats.blob_refs = refs.len() as u64;
    let mut work: Vec<(
        Option<u64>,
        String,
        TreeEntry,
        crate::registry_config::manifest::Descriptor,
    )> = Vec::new();
    for (dir, d, _) in refs {
        let bp = format!("{dir}/{}", d.hex);
        match cx.index.file(&bp) {
            None => {
                if d.foreign {
                    rep.warn(
                        "FOREIGN_BLOB_ABSENT",
                        &bp,
                        format!("foreign layer sha256:{} is not on the image", d.hex),
                    );
                } else {
                    rep.error(
                        "BLOB_MISSING",
                        &bp,
                        format!("blob sha256:{} is absent", d.hex),
                    );
                }
            }
            Some(e) => work.push((e.identity, bp, e.clone(), d)),
        }
    }
    work.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (_, bp, e, d) in work {
        if e.size != d.size {
            rep.error(
                "BLOB_SIZE_MISMATCH",
                &bp,
                format!("blob is {} bytes, its manifest says {}", e.size, d.size),
            );
            continue;
        }
        match cx.hash(&e, &mut rep.stats) {
            Ok((h, n)) => {
                if n != d.size {
                    rep.error(
                        "BLOB_SIZE_MISMATCH",
                        &bp,
                        format!("read {n} bytes, expected {}", d.size),
                    );
                } else if h != d.hex {
                    rep.error(
                        "BLOB_DIGEST_MISMATCH",
                        &bp,
                        format!("content has sha256:{h}, expected sha256:{}", d.hex),
                    );
                }
            }
            Err(x) => rep.error("BLOB_UNREADABLE", &bp, x),
        }
    }
    found
}

fn check_operator(cx: &mut Ctx, rep: &mut Report) {
    let rp = "operator/deploy/role.yaml";
    match cx.index.file(rp).cloned() {
        None => rep.error("ROLE_MISSING", rp, "no operator/deploy/role.yaml"),
        Some(e) => match cx.read_small(&e).and_then(|b| yaml_docs(&b)) {
            Err(x) => rep.error("ROLE_INVALID", rp, format!("not valid YAML: {x}")),
            Ok(docs) => {
                if docs.is_empty() {
                    rep.warn("ROLE_EMPTY", rp, "role.yaml holds no document");
                }
                for (i, d) in docs.iter().enumerate() {
                    let kind = d.get("kind").and_then(Value::as_str);
                    if !matches!(kind, Some("Role") | Some("ClusterRole")) {
                        rep.error(
                            "ROLE_FORBIDDEN_KIND",
                            rp,
                            format!("document {} is of kind {kind:?}: only Role and ClusterRole are allowed", i + 1),
                        );
                    } else if !d
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .is_some_and(|a| a.starts_with("rbac.authorization.k8s.io/"))
                    {
                        rep.error(
                            "ROLE_INVALID",
                            rp,
                            format!(
                                "document {} has no rbac.authorization.k8s.io apiVersion",
                                i + 1
                            ),
                        );
                    }
                }
            }
        },
    }
    let dir = "operator/deploy/crds";
    let files: Vec<TreeEntry> = cx.index.children(dir).cloned().collect();
    let mut crds = 0;
    for f in files {
        if !f.path.ends_with("_crd.yaml") {
            if f.kind != Kind::Dir {
                rep.warn(
                    "CRD_IGNORED_FILE",
                    &f.path,
                    "not named *_crd.yaml: MetalK8s ignores it",
                );
            }
            continue;
        }
        crds += 1;
        let Some(e) = cx.index.file(&f.path).cloned() else {
            rep.error("CRD_INVALID", &f.path, "not a regular file");
            continue;
        };
        match cx.read_small(&e).and_then(|b| yaml_docs(&b)) {
            Err(x) => rep.error("CRD_INVALID", &f.path, format!("not valid YAML: {x}")),
            Ok(docs) => {
                if docs.is_empty() {
                    rep.error("CRD_INVALID", &f.path, "no document");
                }
                for (i, d) in docs.iter().enumerate() {
                    let kind = d.get("kind").and_then(Value::as_str);
                    let api = d.get("apiVersion").and_then(Value::as_str);
                    if kind != Some("CustomResourceDefinition")
                        || !api.is_some_and(|a| a.starts_with("apiextensions.k8s.io/"))
                    {
                        rep.error(
                            "CRD_NOT_A_CRD",
                            &f.path,
                            format!("document {} is {api:?}/{kind:?}, not an apiextensions.k8s.io CustomResourceDefinition", i + 1),
                        );
                    }
                }
            }
        }
    }
    if crds == 0 {
        rep.warn("CRD_NONE", dir, "no operator/deploy/crds/*_crd.yaml");
    }
}

fn check_registry_config(
    cx: &mut Ctx,
    found: &BTreeMap<String, BTreeSet<String>>,
    rep: &mut Report,
) {
    let p = "registry-config.inc.j2";
    let Some(e) = cx.index.file(p).cloned() else {
        rep.error(
            "REGISTRY_CONFIG_MISSING",
            p,
            "no registry-config.inc.j2 at the root",
        );
        return;
    };
    let text = match cx.read_small(&e) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(x) => {
            rep.error("REGISTRY_CONFIG_MISSING", p, x);
            return;
        }
    };
    if !text.contains("{{ repository }}") || !text.contains("{{ registry_root }}") {
        rep.error(
            "REGISTRY_CONFIG_PLACEHOLDERS",
            p,
            "the include must use the {{ repository }} and {{ registry_root }} placeholders",
        );
    }
    for (n, tags) in found {
        for t in tags {
            let loc = format!("/v2/{{{{ repository }}}}/{n}/manifests/{t}\"");
            if !text.contains(&loc) {
                rep.error(
                    "REGISTRY_CONFIG_INCOMPLETE",
                    p,
                    format!("no location serves {n}:{t} (expected {loc})"),
                );
            }
        }
    }
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
