//! Delta ISOs: `delta build OLD.iso NEW.iso -o DELTA.iso` and
//! `delta apply OLD.iso DELTA.iso -o NEW.iso`.
//!
//! A delta ISO holds, at their NEW paths, NEW's metadata whole (everything that is not an
//! image blob, an image tarball or an RPM) and every other file whose content is absent from
//! OLD, plus `/DELTA.json`: the recipe. The recipe names the base (sha256 of OLD.iso, and of
//! its `/CONTENTS.json` when present), lists every entry of NEW (path, kind, mode, size,
//! sha256, hard-link group, symlink target, and where the bytes come from: `base:<path>` or
//! `delta:<path>`) and NEW's mastering options (volume id, timestamp, isomd5sum implant, modes
//! kept or normalized), read back from NEW itself. `apply` rebuilds NEW's tree from the two
//! images (every file checked against its sha256), re-masters it with `iso9660-writer`
//! (deterministic: dates are the timestamp, order is by name, serial numbers follow the tree)
//! and only renames the result into place when its sha256 is NEW's.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use iso9660_writer::{EntryKind, IsoReader};

/// Name of the recipe at the root of a delta ISO.
pub const RECIPE: &str = "DELTA.json";
/// Recipe format version.
pub const FORMAT: u32 = 1;

/// What a delta is built against.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Base {
    /// sha256 of the base ISO file.
    pub sha256: String,
    /// Size of the base ISO file.
    pub size: u64,
    /// sha256 of the base's `/CONTENTS.json`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents_sha256: Option<String>,
}

/// NEW's mastering options and identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    /// sha256 of NEW.iso.
    pub sha256: String,
    /// Size of NEW.iso.
    pub size: u64,
    /// Volume identifier.
    pub volume_id: String,
    /// Timestamp of every date in the image.
    pub timestamp: i64,
    /// isomd5sum record implanted.
    pub implant_md5: bool,
    /// Modes recorded verbatim (not `mkisofs -r` normalized).
    pub keep_modes: bool,
}

/// One entry of NEW.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecipeEntry {
    /// Path.
    pub path: String,
    /// `dir`, `file` or `symlink`.
    pub kind: String,
    /// Mode (permission bits).
    pub mode: u32,
    /// Size (files).
    #[serde(default)]
    pub size: u64,
    /// sha256 (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Hard-link group (entries sharing a Rock Ridge serial number in NEW).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<u32>,
    /// `base:<path>` or `delta:<path>` (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// The recipe (`/DELTA.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recipe {
    /// [`FORMAT`].
    pub format: u32,
    /// The base.
    pub base: Base,
    /// The image to rebuild.
    pub new: Target,
    /// Every entry of NEW, in its walk order.
    pub entries: Vec<RecipeEntry>,
}

/// What [`build`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct BuildReport {
    /// Size of the delta ISO.
    pub delta_bytes: u64,
    /// Files taken from the base.
    pub from_base: usize,
    /// Files held by the delta.
    pub in_delta: usize,
    /// Their bytes (distinct contents).
    pub in_delta_bytes: u64,
}

struct HashingWriter<W: Write> {
    inner: W,
    h: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.h.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn sha256_file(p: &Path) -> Result<(String, u64)> {
    let f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", p.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

fn open_iso(p: &Path) -> Result<IsoReader<BufReader<File>>> {
    let f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    IsoReader::open(BufReader::with_capacity(1 << 20, f))
        .map_err(|e| anyhow!("{}: not an ISO image: {e}", p.display()))
}

fn entry_sha(r: &mut IsoReader<BufReader<File>>, e: &iso9660_writer::Entry) -> Result<String> {
    let mut w = HashingWriter {
        inner: std::io::sink(),
        h: Sha256::new(),
    };
    r.read_file(e, &mut w)
        .map_err(|x| anyhow!("{}: {x}", e.path))?;
    Ok(hex::encode(w.h.finalize()))
}

fn contents_digest(r: &mut IsoReader<BufReader<File>>) -> Result<Option<String>> {
    match r.find("CONTENTS.json").map_err(|e| anyhow!("{e}"))? {
        Some(e) if e.kind == EntryKind::File => Ok(Some(entry_sha(r, &e)?)),
        _ => Ok(None),
    }
}

fn base_of(old: &Path) -> Result<Base> {
    let (sha256, size) = sha256_file(old)?;
    let mut r = open_iso(old)?;
    Ok(Base {
        sha256,
        size,
        contents_sha256: contents_digest(&mut r)?,
    })
}

/// Whether `path` is metadata a delta always carries (not an image blob, an image tarball or
/// an RPM).
fn is_metadata(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let blob = path.starts_with("images/")
        && (crate::store::is_sha256_hex(name) || name.ends_with(".tar"));
    !(blob || name.ends_with(".rpm"))
}

/// Builds the delta ISO of `new` against `old` into `output` (atomically).
pub fn build(old: &Path, new: &Path, output: &Path) -> Result<BuildReport> {
    let base = base_of(old)?;
    let mut ro = open_iso(old)?;
    let mut by_sha: HashMap<String, String> = HashMap::new();
    for e in ro.walk().map_err(|e| anyhow!("{}: {e}", old.display()))? {
        if e.kind == EntryKind::File {
            let h = entry_sha(&mut ro, &e)?;
            by_sha.entry(h).or_insert(e.path);
        }
    }
    let (new_sha, new_size) = sha256_file(new)?;
    let mut rn = open_iso(new)?;
    let implant_md5 = iso9660_writer::md5sum::check(new)
        .map_err(|e| anyhow!("{}: {e}", new.display()))?
        .status
        != iso9660_writer::CheckStatus::NotImplanted;
    let entries = rn.walk().map_err(|e| anyhow!("{}: {e}", new.display()))?;
    if entries.iter().any(|e| e.path == RECIPE) {
        bail!(
            "{}: already holds /{RECIPE} (is it a delta?)",
            new.display()
        );
    }
    let timestamp = entries.iter().find_map(|e| e.mtime).unwrap_or(0);
    let mut keep_modes = false;
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".bctmp-delta-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a scratch directory in {}", parent.display()))?;
    let root = tmp.path().join("root");
    fs::create_dir_all(&root)?;
    let mut recipe = Vec::new();
    let mut in_delta: HashMap<String, String> = HashMap::new();
    let mut report = BuildReport {
        delta_bytes: 0,
        from_base: 0,
        in_delta: 0,
        in_delta_bytes: 0,
    };
    for e in &entries {
        let mode = e
            .mode
            .ok_or_else(|| anyhow!("{}: {} has no Rock Ridge mode", new.display(), e.path))?;
        if iso9660_writer::normalized_mode(mode) != mode {
            keep_modes = true;
        }
        let mut r = RecipeEntry {
            path: e.path.clone(),
            kind: String::new(),
            mode: mode & 0o7777,
            size: e.size,
            sha256: None,
            target: None,
            link: None,
            from: None,
        };
        match &e.kind {
            EntryKind::Dir => r.kind = "dir".into(),
            EntryKind::Symlink(t) => {
                r.kind = "symlink".into();
                r.target = Some(t.clone());
            }
            EntryKind::File => {
                r.kind = "file".into();
                if e.nlink.unwrap_or(1) > 1 {
                    r.link = e.serial;
                }
                let h = entry_sha(&mut rn, e)?;
                let from = if let Some(p) = in_delta.get(&h) {
                    format!("delta:{p}")
                } else if let (false, Some(p)) = (is_metadata(&e.path), by_sha.get(&h)) {
                    report.from_base += 1;
                    format!("base:{p}")
                } else {
                    let dest = root.join(&e.path);
                    if let Some(d) = dest.parent() {
                        fs::create_dir_all(d)?;
                    }
                    let mut f = File::create(&dest)
                        .with_context(|| format!("cannot create {}", dest.display()))?;
                    rn.read_file(e, &mut f)
                        .map_err(|x| anyhow!("{}: {}: {x}", new.display(), e.path))?;
                    in_delta.insert(h.clone(), e.path.clone());
                    report.in_delta += 1;
                    report.in_delta_bytes += e.size;
                    format!("delta:{}", e.path)
                };
                r.sha256 = Some(h);
                r.from = Some(from);
            }
            EntryKind::Other => bail!(
                "{}: {} is not a file, directory or symlink",
                new.display(),
                e.path
            ),
        }
        recipe.push(r);
    }
    let served = registry_include(&mut rn, &entries, &recipe, tmp.path())?;
    if let Some(text) = served {
        fs::write(root.join(REGISTRY_INCLUDE), text)?;
    }
    let recipe = Recipe {
        format: FORMAT,
        base,
        new: Target {
            sha256: new_sha,
            size: new_size,
            volume_id: rn.volume_id().to_string(),
            timestamp,
            implant_md5,
            keep_modes,
        },
        entries: recipe,
    };
    let mut json = serde_json::to_vec_pretty(&recipe)?;
    json.push(b'\n');
    fs::write(root.join(RECIPE), json)?;
    let volid: String = format!("DELTA {}", recipe.new.volume_id)
        .chars()
        .take(32)
        .collect();
    let rep = crate::isofile::master_atomic(&root, output, &volid, true, timestamp, None)?;
    report.delta_bytes = rep.size;
    Ok(report)
}

/// The nginx include template of a delta ISO serving NEW's images without re-assembly: each
/// manifest and blob location aliases the file in the delta mount (`{{ delta_root }}`) or in
/// the base mount (`{{ base_root }}`); `{{ repository }}` is the name prefix, as in a
/// Solution's `registry-config.inc.j2`.
pub const REGISTRY_INCLUDE: &str = "registry-delta.inc.j2";

/// Renders [`REGISTRY_INCLUDE`] for NEW's `images/` (extracted into `scratch` to be scanned
/// like any images tree); `None` when NEW has no images.
fn registry_include(
    rn: &mut IsoReader<BufReader<File>>,
    entries: &[iso9660_writer::Entry],
    recipe: &[RecipeEntry],
    scratch: &Path,
) -> Result<Option<String>> {
    if !entries
        .iter()
        .any(|e| e.path.starts_with("images/") && e.path.ends_with("/manifest.json"))
    {
        return Ok(None);
    }
    let top = scratch.join("new-images");
    for e in entries.iter().filter(|e| e.path.starts_with("images/")) {
        let dest = top.join(&e.path);
        match e.kind {
            EntryKind::Dir => fs::create_dir_all(&dest)?,
            EntryKind::File => {
                if let Some(d) = dest.parent() {
                    fs::create_dir_all(d)?;
                }
                let mut f = File::create(&dest)?;
                rn.read_file(e, &mut f)
                    .map_err(|x| anyhow!("{}: {x}", e.path))?;
            }
            _ => {}
        }
    }
    let text = crate::registry_config::generate(
        &top.join("images"),
        &crate::registry_config::Options::solution(),
    )?;
    let from: HashMap<&str, &str> = recipe
        .iter()
        .filter_map(|r| r.from.as_deref().map(|f| (r.path.as_str(), f)))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rel) = t
            .strip_prefix("alias \"{{ registry_root }}/")
            .and_then(|r| r.strip_suffix("\";"))
        {
            let new_path = format!("images/{rel}");
            let f = from
                .get(new_path.as_str())
                .ok_or_else(|| anyhow!("{new_path}: served but not in the recipe"))?;
            let (root, p) = if let Some(p) = f.strip_prefix("base:") {
                ("{{ base_root }}", p)
            } else {
                ("{{ delta_root }}", f.strip_prefix("delta:").unwrap_or(f))
            };
            let indent = &line[..line.len() - t.len()];
            out.push_str(&format!("{indent}alias \"{root}/{p}\";\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(Some(out))
}

/// Reads the recipe of a delta ISO.
pub fn read_recipe(delta: &Path) -> Result<Recipe> {
    let mut rd = open_iso(delta)?;
    let e = rd
        .find(RECIPE)
        .map_err(|e| anyhow!("{}: {e}", delta.display()))?
        .ok_or_else(|| anyhow!("{}: not a delta ISO (no /{RECIPE})", delta.display()))?;
    let bytes = rd
        .read_to_vec(&e, 64 << 20)
        .map_err(|x| anyhow!("{}: /{RECIPE}: {x}", delta.display()))?;
    let r: Recipe = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: /{RECIPE} is not a valid recipe", delta.display()))?;
    if r.format != FORMAT {
        bail!(
            "{}: /{RECIPE} has format {}, this buildchain reads format {FORMAT}",
            delta.display(),
            r.format
        );
    }
    Ok(r)
}

/// Rebuilds NEW from `old` and `delta` into `output`; returns its sha256. Refuses a base the
/// delta does not name, and writes nothing unless the result is byte-identical to NEW.
pub fn apply(old: &Path, delta: &Path, output: &Path) -> Result<String> {
    let recipe = read_recipe(delta)?;
    let base = base_of(old)?;
    let contents_ok = matches!(
        (&base.contents_sha256, &recipe.base.contents_sha256),
        (Some(a), Some(b)) if a == b
    );
    if base.sha256 != recipe.base.sha256 && !contents_ok {
        bail!(
            "{} is not the base of {}: the delta needs an ISO with sha256 {}{}, this one has sha256 {}",
            old.display(),
            delta.display(),
            recipe.base.sha256,
            recipe
                .base
                .contents_sha256
                .as_ref()
                .map(|c| format!(" (or a /CONTENTS.json with sha256 {c})"))
                .unwrap_or_default(),
            base.sha256
        );
    }
    let mut ro = open_iso(old)?;
    let mut rd = open_iso(delta)?;
    let old_entries: HashMap<String, iso9660_writer::Entry> = ro
        .walk()
        .map_err(|e| anyhow!("{}: {e}", old.display()))?
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
    let delta_entries: HashMap<String, iso9660_writer::Entry> = rd
        .walk()
        .map_err(|e| anyhow!("{}: {e}", delta.display()))?
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".bctmp-delta-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a scratch directory in {}", parent.display()))?;
    let root = tmp.path().join("root");
    fs::create_dir_all(&root)?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    let mut links: BTreeMap<u32, PathBuf> = BTreeMap::new();
    let mut modes: Vec<(PathBuf, u32)> = Vec::new();
    for e in &recipe.entries {
        if e.path.is_empty()
            || e.path.starts_with('/')
            || e.path
                .split('/')
                .any(|c| c == ".." || c == "." || c.is_empty())
        {
            bail!("{}: /{RECIPE}: invalid path {:?}", delta.display(), e.path);
        }
        let dest = root.join(&e.path);
        if let Some(d) = dest.parent() {
            fs::create_dir_all(d)?;
        }
        match e.kind.as_str() {
            "dir" => {
                fs::create_dir_all(&dest)?;
                modes.push((dest, e.mode));
            }
            "symlink" => {
                let t = e.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(t, &dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?;
            }
            "file" => {
                if let Some(first) = e.link.and_then(|l| links.get(&l)) {
                    fs::hard_link(first, &dest)
                        .with_context(|| format!("cannot link {}", dest.display()))?;
                    continue;
                }
                let from = e.from.as_deref().unwrap_or_default();
                let (reader, entries, what, src) = if let Some(p) = from.strip_prefix("base:") {
                    (&mut ro, &old_entries, old, p)
                } else if let Some(p) = from.strip_prefix("delta:") {
                    (&mut rd, &delta_entries, delta, p)
                } else {
                    bail!(
                        "{}: /{RECIPE}: {}: invalid source {from:?}",
                        delta.display(),
                        e.path
                    );
                };
                let se = entries.get(src).ok_or_else(|| {
                    anyhow!("{}: {src} (for {}) is missing", what.display(), e.path)
                })?;
                let f = File::create(&dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?;
                let mut w = HashingWriter {
                    inner: std::io::BufWriter::new(f),
                    h: Sha256::new(),
                };
                reader
                    .read_file(se, &mut w)
                    .map_err(|x| anyhow!("{}: {src}: {x}", what.display()))?;
                w.flush()?;
                let got = hex::encode(w.h.finalize());
                if Some(&got) != e.sha256.as_ref() {
                    bail!(
                        "{}: {src} has sha256 {got}, {} needs {}",
                        what.display(),
                        e.path,
                        e.sha256.as_deref().unwrap_or("?")
                    );
                }
                if let Some(l) = e.link {
                    links.insert(l, dest.clone());
                }
                modes.push((dest, e.mode));
            }
            k => bail!(
                "{}: /{RECIPE}: {}: invalid kind {k:?}",
                delta.display(),
                e.path
            ),
        }
    }
    // Modes last (directories may be read-only in NEW).
    for (p, m) in modes.iter().rev() {
        fs::set_permissions(p, fs::Permissions::from_mode(*m))
            .with_context(|| format!("cannot chmod {}", p.display()))?;
    }
    let opts = iso9660_writer::MasterOptions {
        volume_id: recipe.new.volume_id.clone(),
        timestamp: recipe.new.timestamp,
        implant_md5: recipe.new.implant_md5,
        progress: None,
        keep_modes: recipe.new.keep_modes,
    };
    let mut out = crate::fsutil::AtomicFile::create(output)?;
    let rep = iso9660_writer::master(&root, out.file(), &opts)
        .with_context(|| format!("cannot master the rebuilt tree into {}", output.display()))?;
    if rep.sha256_hex != recipe.new.sha256 {
        bail!(
            "the rebuilt image has sha256 {}, the delta promises {}: {} not written",
            rep.sha256_hex,
            recipe.new.sha256,
            output.display()
        );
    }
    out.set_mode(0o644)?;
    out.commit()?;
    Ok(rep.sha256_hex)
}
