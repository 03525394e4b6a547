//! `buildchain diff OLD NEW`: two ISOs (or two trees) compared the way a release engineer reads
//! them: images (layers shared and new), RPMs (NEVRA from their headers), Salt and script files,
//! and the size of each part. Renders text, JSON or one self-contained HTML page (inline CSS
//! and an inline SVG chart; no script, no external asset).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::images::manifest::Manifest;
use crate::solution::tree::{DirTree, FileTree, IsoTree, Kind, TreeEntry};

/// Size categories of a tree.
pub const CATEGORIES: &[&str] = &["images", "packages", "salt", "scripts", "other"];

/// One image (`images/<name>/<tag>/manifest.json`) of a tree.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInfo {
    /// `name:tag`.
    pub image: String,
    /// sha256 of `manifest.json`.
    pub digest: String,
    /// Blob digests (config and layers) with sizes.
    pub blobs: BTreeMap<String, u64>,
}

/// A changed image.
#[derive(Clone, Debug, Serialize)]
pub struct ImageChange {
    /// `name:tag` (the new one unless removed).
    pub image: String,
    /// The old `name:tag` (absent when added; another tag when only the tag moved).
    pub old_image: Option<String>,
    /// Old manifest digest (absent when added).
    pub old_digest: Option<String>,
    /// New manifest digest (absent when removed).
    pub new_digest: Option<String>,
    /// Blobs of the new image already in the old tree.
    pub shared_blobs: usize,
    /// Their bytes.
    pub shared_bytes: u64,
    /// Blobs of the new image absent from the old tree.
    pub new_blobs: usize,
    /// Their bytes.
    pub new_bytes: u64,
}

/// An RPM change.
#[derive(Clone, Debug, Serialize)]
pub struct RpmChange {
    /// `name.arch`.
    pub package: String,
    /// `added`, `removed`, `upgraded`, `downgraded` or `rebuilt`.
    pub change: String,
    /// Old `[E:]V-R` (absent when added).
    pub old: Option<String>,
    /// New `[E:]V-R` (absent when removed).
    pub new: Option<String>,
}

/// A file change (Salt, scripts, other metadata).
#[derive(Clone, Debug, Serialize)]
pub struct FileChange {
    /// Path in the tree.
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub change: String,
    /// Old size.
    pub old_size: Option<u64>,
    /// New size.
    pub new_size: Option<u64>,
}

/// The comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    /// Old side (path as given).
    pub old: String,
    /// New side.
    pub new: String,
    /// Size of the old ISO file (or sum of the tree's file sizes).
    pub old_bytes: u64,
    /// Same for the new side.
    pub new_bytes: u64,
    /// `new_bytes - old_bytes`.
    pub size_delta: i64,
    /// Bytes per category (see [`CATEGORIES`]), old side.
    pub old_breakdown: BTreeMap<String, u64>,
    /// Bytes per category, new side.
    pub new_breakdown: BTreeMap<String, u64>,
    /// Images added, removed or changed (unchanged ones are left out).
    pub images: Vec<ImageChange>,
    /// RPMs added, removed, upgraded…
    pub rpms: Vec<RpmChange>,
    /// Salt files (`salt/`, `pillar/`) changed.
    pub salt: Vec<FileChange>,
    /// Scripts (`*.sh`) changed.
    pub scripts: Vec<FileChange>,
    /// Other files (metadata, repodata, …) changed.
    pub other: Vec<FileChange>,
}

/// A tree's facts used by the comparison.
struct Side {
    bytes: u64,
    breakdown: BTreeMap<String, u64>,
    images: BTreeMap<String, ImageInfo>,
    /// Every blob digest of every image.
    blobs: BTreeSet<String>,
    /// `name.arch` → (EVR, sha256 of the RPM's header region proxy: size).
    rpms: BTreeMap<String, (String, u64)>,
    /// Other files: path → (category, size, sha256).
    files: BTreeMap<String, (String, u64, String)>,
}

fn category(path: &str) -> &'static str {
    if path.starts_with("images/") {
        "images"
    } else if path.starts_with("packages/") {
        "packages"
    } else if path.starts_with("salt/") || path.starts_with("pillar/") {
        "salt"
    } else if path.ends_with(".sh") {
        "scripts"
    } else {
        "other"
    }
}

/// A writer keeping at most `cap` bytes, then refusing more.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let room = self.cap - self.buf.len();
        if room == 0 {
            return Err(std::io::Error::other("enough"));
        }
        let n = room.min(b.len());
        self.buf.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct HashW(Sha256);

impl Write for HashW {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// sha256 hex of a tree file.
pub fn hash_entry(t: &mut dyn FileTree, e: &TreeEntry) -> Result<String> {
    let mut h = HashW(Sha256::new());
    t.stream(e, &mut h)?;
    Ok(hex::encode(h.0.finalize()))
}

/// `name.arch` and `[E:]V-R` of an RPM from its header (only the start of the file is read).
fn rpm_nevra(t: &mut dyn FileTree, e: &TreeEntry) -> Result<(String, String)> {
    let mut c = Capped {
        buf: Vec::new(),
        cap: 16 << 20,
    };
    if let Err(err) = t.stream(e, &mut c) {
        if c.buf.len() < c.cap {
            return Err(err);
        }
    }
    let md = rpm::PackageMetadata::parse(&mut std::io::Cursor::new(&c.buf))
        .with_context(|| format!("{}: not an RPM", e.path))?;
    let name = md.get_name().context("name")?.to_string();
    let arch = if md.is_source_package() {
        "src".to_string()
    } else {
        md.get_arch().context("arch")?.to_string()
    };
    let epoch = md.get_epoch().unwrap_or(0);
    let v = md.get_version().context("version")?;
    let r = md.get_release().context("release")?;
    let evr = if epoch > 0 {
        format!("{epoch}:{v}-{r}")
    } else {
        format!("{v}-{r}")
    };
    Ok((format!("{name}.{arch}"), evr))
}

/// Opens `path` as an ISO image (a file) or a tree (a directory).
pub fn open_tree(path: &Path) -> Result<Box<dyn FileTree>> {
    let md = std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
    if md.is_dir() {
        Ok(Box::new(DirTree::new(path)))
    } else {
        Ok(Box::new(IsoTree::open(path).with_context(|| {
            format!("{}: not an ISO image", path.display())
        })?))
    }
}

fn read_side(path: &Path) -> Result<Side> {
    let mut t = open_tree(path)?;
    let entries = t.entries()?;
    let mut s = Side {
        bytes: 0,
        breakdown: CATEGORIES.iter().map(|c| (c.to_string(), 0)).collect(),
        images: BTreeMap::new(),
        blobs: BTreeSet::new(),
        rpms: BTreeMap::new(),
        files: BTreeMap::new(),
    };
    let by_path: BTreeMap<&str, &TreeEntry> =
        entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut seen_identity = BTreeSet::new();
    for e in &entries {
        if e.kind != Kind::File {
            continue;
        }
        let cat = category(&e.path);
        // Shared extents / hard links hold their bytes once.
        if e.identity.map(|i| seen_identity.insert(i)).unwrap_or(true) {
            *s.breakdown.get_mut(cat).unwrap_or(&mut 0) += e.size;
            s.bytes += e.size;
        }
        if cat == "images" {
            if let Some(dir) = e.path.strip_suffix("/manifest.json") {
                let parts: Vec<&str> = dir.split('/').collect();
                if parts.len() == 3 {
                    let image = format!("{}:{}", parts[1], parts[2]);
                    let bytes = t.read_small(e, 16 << 20)?;
                    let digest = hex::encode(Sha256::digest(&bytes));
                    let mut blobs = BTreeMap::new();
                    let mut manifests = vec![bytes];
                    while let Some(b) = manifests.pop() {
                        match Manifest::parse(&b, None)
                            .with_context(|| format!("{}: {}", path.display(), e.path))?
                        {
                            Manifest::Image { config, layers, .. } => {
                                blobs.insert(config.hex().to_string(), config.size);
                                for l in layers {
                                    blobs.insert(l.hex().to_string(), l.size);
                                }
                            }
                            Manifest::Index { manifests: ms, .. } => {
                                for (d, _) in ms {
                                    let p = format!("{dir}/{}.manifest.json", d.hex());
                                    if let Some(me) = by_path.get(p.as_str()) {
                                        manifests.push(t.read_small(me, 16 << 20)?);
                                    }
                                }
                            }
                        }
                    }
                    s.blobs.extend(blobs.keys().cloned());
                    s.images.insert(
                        image.clone(),
                        ImageInfo {
                            image,
                            digest,
                            blobs,
                        },
                    );
                }
            }
            continue;
        }
        if e.path.ends_with(".rpm") {
            let (pkg, evr) = rpm_nevra(&mut *t, e)?;
            s.rpms.insert(pkg, (evr, e.size));
            continue;
        }
        let h = hash_entry(&mut *t, e)?;
        s.files.insert(e.path.clone(), (cat.to_string(), e.size, h));
    }
    if std::fs::metadata(path)?.is_file() {
        s.bytes = std::fs::metadata(path)?.len();
    }
    Ok(s)
}

/// Compares `old` and `new` (ISO files or directories).
pub fn diff(old: &Path, new: &Path) -> Result<Diff> {
    let a = read_side(old)?;
    let b = read_side(new)?;
    let mut images = Vec::new();
    // Pair `name:old` with `name:new` when the tag is the only thing that moved (one tag of
    // that name only on each side): a Solution tags its images with its version.
    let only = |x: &Side, y: &Side| -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for k in x.images.keys().filter(|k| !y.images.contains_key(*k)) {
            let (n, _) = k.rsplit_once(':').unwrap_or((k, ""));
            m.entry(n.to_string()).or_default().push(k.clone());
        }
        m
    };
    let (old_only, new_only) = (only(&a, &b), only(&b, &a));
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    for (n, olds) in &old_only {
        if let (1, Some(news)) = (olds.len(), new_only.get(n)) {
            if news.len() == 1 {
                renamed.insert(news[0].clone(), olds[0].clone());
            }
        }
    }
    let paired_old: BTreeSet<&String> = renamed.values().collect();
    let names: BTreeSet<&String> = a
        .images
        .keys()
        .filter(|k| !paired_old.contains(k))
        .chain(b.images.keys())
        .collect();
    for n in names {
        let old_name = renamed.get(n).unwrap_or(n);
        let (o, nw) = (a.images.get(old_name), b.images.get(n));
        if let (Some(o), Some(nw)) = (o, nw) {
            if o.digest == nw.digest && old_name == n {
                continue;
            }
        }
        let mut c = ImageChange {
            image: n.clone(),
            old_image: o.map(|i| i.image.clone()),
            old_digest: o.map(|i| format!("sha256:{}", i.digest)),
            new_digest: nw.map(|i| format!("sha256:{}", i.digest)),
            shared_blobs: 0,
            shared_bytes: 0,
            new_blobs: 0,
            new_bytes: 0,
        };
        for (d, size) in nw.map(|i| &i.blobs).into_iter().flatten() {
            if a.blobs.contains(d) {
                c.shared_blobs += 1;
                c.shared_bytes += size;
            } else {
                c.new_blobs += 1;
                c.new_bytes += size;
            }
        }
        images.push(c);
    }
    let mut rpms = Vec::new();
    let pkgs: BTreeSet<&String> = a.rpms.keys().chain(b.rpms.keys()).collect();
    for p in pkgs {
        let (o, n) = (a.rpms.get(p), b.rpms.get(p));
        let change = match (o, n) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some((ov, os)), Some((nv, ns))) => {
                use crate::packaging::evr::Evr;
                match Evr::parse(ov).cmp(&Evr::parse(nv)) {
                    std::cmp::Ordering::Less => "upgraded",
                    std::cmp::Ordering::Greater => "downgraded",
                    std::cmp::Ordering::Equal if os != ns => "rebuilt",
                    std::cmp::Ordering::Equal => continue,
                }
            }
            (None, None) => continue,
        };
        rpms.push(RpmChange {
            package: p.clone(),
            change: change.into(),
            old: o.map(|x| x.0.clone()),
            new: n.map(|x| x.0.clone()),
        });
    }
    let (mut salt, mut scripts, mut other) = (Vec::new(), Vec::new(), Vec::new());
    let paths: BTreeSet<&String> = a.files.keys().chain(b.files.keys()).collect();
    for p in paths {
        let (o, n) = (a.files.get(p), b.files.get(p));
        let change = match (o, n) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some(x), Some(y)) if x.2 != y.2 => "changed",
            _ => continue,
        };
        let cat = o.or(n).map(|x| x.0.as_str()).unwrap_or("other");
        let fc = FileChange {
            path: p.clone(),
            change: change.into(),
            old_size: o.map(|x| x.1),
            new_size: n.map(|x| x.1),
        };
        match cat {
            "salt" => salt.push(fc),
            "scripts" => scripts.push(fc),
            _ => other.push(fc),
        }
    }
    Ok(Diff {
        old: old.display().to_string(),
        new: new.display().to_string(),
        old_bytes: a.bytes,
        new_bytes: b.bytes,
        size_delta: b.bytes as i64 - a.bytes as i64,
        old_breakdown: a.breakdown,
        new_breakdown: b.breakdown,
        images,
        rpms,
        salt,
        scripts,
        other,
    })
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
}

fn kind_of(c: &ImageChange) -> &'static str {
    match (&c.old_digest, &c.new_digest) {
        (None, _) => "added",
        (_, None) => "removed",
        _ => "changed",
    }
}

/// The diff as text.
pub fn render_text(d: &Diff) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "old: {} ({} bytes)", d.old, d.old_bytes);
    let _ = writeln!(s, "new: {} ({} bytes)", d.new, d.new_bytes);
    let _ = writeln!(s, "size delta: {:+} bytes", d.size_delta);
    for c in CATEGORIES {
        let _ = writeln!(
            s,
            "  {c:<9} {:>14} -> {:>14}",
            d.old_breakdown[*c], d.new_breakdown[*c]
        );
    }
    let _ = writeln!(s, "images ({}):", d.images.len());
    for c in &d.images {
        let name = match &c.old_image {
            Some(o) if *o != c.image => format!("{o} -> {}", c.image),
            _ => c.image.clone(),
        };
        let _ = writeln!(
            s,
            "  {} {name}: {} blobs shared ({} bytes), {} new ({} bytes)",
            kind_of(c),
            c.shared_blobs,
            c.shared_bytes,
            c.new_blobs,
            c.new_bytes
        );
    }
    let _ = writeln!(s, "rpms ({}):", d.rpms.len());
    for r in &d.rpms {
        let _ = writeln!(
            s,
            "  {} {}: {} -> {}",
            r.change,
            r.package,
            opt(&r.old),
            opt(&r.new)
        );
    }
    for (title, list) in [
        ("salt", &d.salt),
        ("scripts", &d.scripts),
        ("other", &d.other),
    ] {
        let _ = writeln!(s, "{title} ({}):", list.len());
        for f in list {
            let _ = writeln!(
                s,
                "  {} {} ({} -> {} bytes)",
                f.change,
                f.path,
                opt(&f.old_size),
                opt(&f.new_size)
            );
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: &[&str] = &["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#9c755f"];

/// The inline SVG bar chart: one stacked bar per side, one colour per category.
fn svg_chart(d: &Diff) -> String {
    let max = d
        .old_breakdown
        .values()
        .sum::<u64>()
        .max(d.new_breakdown.values().sum::<u64>())
        .max(1);
    let width = 900.0;
    let mut s = String::from(
        "<svg id=\"size-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"1000\" height=\"150\" role=\"img\" aria-label=\"size breakdown\">",
    );
    for (row, (label, bd)) in [("old", &d.old_breakdown), ("new", &d.new_breakdown)]
        .iter()
        .enumerate()
    {
        let y = 10 + row * 50;
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{}\" font-size=\"14\">{label}</text>",
            y + 25
        );
        let mut x = 50.0;
        for (i, c) in CATEGORIES.iter().enumerate() {
            let w = bd[*c] as f64 / max as f64 * width;
            let _ = write!(
                s,
                "<rect class=\"bar bar-{label}-{c}\" x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"40\" fill=\"{}\"><title>{label} {c}: {} bytes</title></rect>",
                COLORS[i], bd[*c]
            );
            x += w;
        }
    }
    for (i, c) in CATEGORIES.iter().enumerate() {
        let x = 50 + i * 150;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"125\" width=\"14\" height=\"14\" fill=\"{}\"/><text x=\"{}\" y=\"137\" font-size=\"13\">{c}</text>",
            COLORS[i],
            x + 20
        );
    }
    s.push_str("</svg>");
    s
}

/// The diff as one self-contained HTML page.
pub fn render_html(d: &Diff) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>buildchain diff</title><style>\n");
    s.push_str("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#eee}.added{color:#1a7f37}.removed{color:#cf222e}.num{text-align:right;font-family:monospace}\n");
    s.push_str("</style></head><body>\n<h1>Release diff</h1>\n");
    let _ = writeln!(
        s,
        "<p>old: <code>{}</code> ({} bytes)<br>new: <code>{}</code> ({} bytes)<br>size delta: <strong id=\"size-delta\">{:+}</strong> bytes</p>",
        esc(&d.old),
        d.old_bytes,
        esc(&d.new),
        d.new_bytes,
        d.size_delta
    );
    s.push_str("<h2>Size breakdown</h2>\n");
    s.push_str(&svg_chart(d));
    s.push_str(
        "\n<table id=\"breakdown\"><tr><th>part</th><th>old bytes</th><th>new bytes</th></tr>\n",
    );
    for c in CATEGORIES {
        let _ = writeln!(
            s,
            "<tr class=\"part\" data-part=\"{c}\"><td>{c}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            d.old_breakdown[*c], d.new_breakdown[*c]
        );
    }
    s.push_str("</table>\n");
    let _ = writeln!(s, "<h2>Images ({})</h2>", d.images.len());
    s.push_str("<table id=\"images\"><tr><th>change</th><th>image</th><th>shared blobs</th><th>shared bytes</th><th>new blobs</th><th>new bytes</th></tr>\n");
    for c in &d.images {
        let k = kind_of(c);
        let _ = writeln!(
            s,
            "<tr class=\"image {k}\" data-image=\"{}\"><td>{k}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&c.image),
            esc(&match &c.old_image {
                Some(o) if *o != c.image => format!("{o} \u{2192} {}", c.image),
                _ => c.image.clone(),
            }),
            c.shared_blobs,
            c.shared_bytes,
            c.new_blobs,
            c.new_bytes
        );
    }
    s.push_str("</table>\n");
    let _ = writeln!(s, "<h2>RPMs ({})</h2>", d.rpms.len());
    s.push_str(
        "<table id=\"rpms\"><tr><th>change</th><th>package</th><th>old</th><th>new</th></tr>\n",
    );
    for r in &d.rpms {
        let _ = writeln!(
            s,
            "<tr class=\"rpm {}\" data-package=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.change,
            esc(&r.package),
            r.change,
            esc(&r.package),
            esc(&opt(&r.old)),
            esc(&opt(&r.new))
        );
    }
    s.push_str("</table>\n");
    for (id, title, list) in [
        ("salt", "Salt", &d.salt),
        ("scripts", "Scripts", &d.scripts),
        ("other", "Other files", &d.other),
    ] {
        let _ = writeln!(s, "<h2>{title} ({})</h2>", list.len());
        let _ = writeln!(
            s,
            "<table id=\"{id}\"><tr><th>change</th><th>path</th><th>old bytes</th><th>new bytes</th></tr>"
        );
        for f in list {
            let _ = writeln!(
                s,
                "<tr class=\"file {}\" data-path=\"{}\"><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                f.change,
                esc(&f.path),
                f.change,
                esc(&f.path),
                opt(&f.old_size),
                opt(&f.new_size)
            );
        }
        s.push_str("</table>\n");
    }
    s.push_str("</body></html>\n");
    s
}
