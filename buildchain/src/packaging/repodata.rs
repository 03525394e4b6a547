//! Our yum repodata writer: `repodata/repomd.xml` plus checksum-prefixed `primary.xml.gz`,
//! `filelists.xml.gz` and `other.xml.gz` (the `createrepo_c` default naming), sha256 everywhere,
//! `rpm:header-range` from the rpm crate's segment offsets, hrefs relative to the repo root.
//!
//! Deterministic: packages sorted by location, every timestamp is the `revision`
//! (SOURCE_DATE_EPOCH), gzip streams carry no name nor mtime. Package files are read once each
//! (hash and header in one pass), in parallel.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use rayon::prelude::*;
use rpm::{DependencyFlags, FileFlags, FileType, IndexSignatureTag, IndexTag, PackageMetadata};
use sha2::{Digest, Sha256};

/// How repodata is written.
#[derive(Clone, Debug)]
pub struct RepodataOptions {
    /// `<revision>` and every `<timestamp>`/`time file` value (SOURCE_DATE_EPOCH).
    pub revision: u64,
    /// Changelog entries kept per package in `other.xml` (createrepo_c's default is 10).
    pub changelog_limit: usize,
    /// gzip level (0–9).
    pub gzip_level: u32,
}

impl Default for RepodataOptions {
    fn default() -> Self {
        RepodataOptions {
            revision: u64::from(super::build::DEFAULT_SOURCE_DATE),
            changelog_limit: 10,
            gzip_level: 6,
        }
    }
}

/// What [`write_repodata`] wrote.
#[derive(Clone, Debug)]
pub struct RepodataOutput {
    /// `repodata/repomd.xml` and the three metadata files (absolute paths).
    pub files: Vec<PathBuf>,
    /// Number of packages indexed.
    pub packages: usize,
}

/// Metadata of one package as the repodata needs it.
#[derive(Clone, Debug)]
pub struct PackageInfo {
    /// Location relative to the repo root (`foo-1-1.el8.noarch.rpm`).
    pub href: String,
    /// sha256 of the whole RPM (hex).
    pub sha256: String,
    /// Size of the RPM file.
    pub size: u64,
    /// Header range start (end of the signature header + padding).
    pub header_start: u64,
    /// Header range end (start of the payload).
    pub header_end: u64,
    primary: String,
    filelists: String,
    other: String,
}

/// Every `*.rpm` under `repo_dir` (recursively, skipping `repodata/`), as sorted relative hrefs.
pub fn scan_rpms(repo_dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(repo_dir).follow_links(false) {
        let e = e.with_context(|| format!("cannot list {}", repo_dir.display()))?;
        if e.depth() == 1 && e.file_type().is_dir() && e.file_name() == "repodata" {
            continue;
        }
        if e.path().starts_with(repo_dir.join("repodata")) {
            continue;
        }
        if e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "rpm") {
            let rel = e.path().strip_prefix(repo_dir).unwrap_or(e.path());
            out.push(
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `repodata/` for every RPM under `repo_dir`.
pub fn write_repodata(repo_dir: &Path, opts: &RepodataOptions) -> Result<RepodataOutput> {
    let hrefs = scan_rpms(repo_dir)?;
    write_repodata_for(repo_dir, &hrefs, opts)
}

/// Writes `repodata/` for the given RPMs (hrefs relative to `repo_dir`), removing stale
/// metadata files of earlier runs. `repomd.xml` is replaced last, atomically, so a reader never
/// sees it name a missing file.
pub fn write_repodata_for(
    repo_dir: &Path,
    hrefs: &[String],
    opts: &RepodataOptions,
) -> Result<RepodataOutput> {
    let mut infos: Vec<PackageInfo> = hrefs
        .par_iter()
        .map(|h| read_package(repo_dir, h, opts))
        .collect::<Result<_>>()?;
    infos.sort_by(|a, b| a.href.cmp(&b.href));
    let n = infos.len();
    let docs = [
        (
            "primary",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"{n}\">\n"
            ),
            "</metadata>\n",
        ),
        (
            "filelists",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<filelists xmlns=\"http://linux.duke.edu/metadata/filelists\" packages=\"{n}\">\n"
            ),
            "</filelists>\n",
        ),
        (
            "other",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<otherdata xmlns=\"http://linux.duke.edu/metadata/other\" packages=\"{n}\">\n"
            ),
            "</otherdata>\n",
        ),
    ];
    let infos_ref = &infos;
    let compressed: Vec<(String, Vec<u8>, String, u64)> = docs
        .par_iter()
        .map(|(kind, head, tail)| {
            let mut xml = Vec::with_capacity(
                head.len()
                    + infos_ref
                        .iter()
                        .map(|i| match *kind {
                            "primary" => i.primary.len(),
                            "filelists" => i.filelists.len(),
                            _ => i.other.len(),
                        })
                        .sum::<usize>()
                    + tail.len(),
            );
            xml.extend_from_slice(head.as_bytes());
            for i in infos_ref {
                let part = match *kind {
                    "primary" => &i.primary,
                    "filelists" => &i.filelists,
                    _ => &i.other,
                };
                xml.extend_from_slice(part.as_bytes());
            }
            xml.extend_from_slice(tail.as_bytes());
            let open_sha = hex::encode(Sha256::digest(&xml));
            let open_size = xml.len() as u64;
            let gz = gzip(&xml, opts.gzip_level)?;
            Ok((kind.to_string(), gz, open_sha, open_size))
        })
        .collect::<Result<_>>()?;

    let repodata = repo_dir.join("repodata");
    crate::fsutil::create_dir_all(&repodata)?;
    let mut files = Vec::new();
    let mut repomd = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">\n",
    );
    let _ = writeln!(repomd, "  <revision>{}</revision>", opts.revision);
    for (kind, gz, open_sha, open_size) in &compressed {
        let sha = hex::encode(Sha256::digest(gz));
        let name = format!("{sha}-{kind}.xml.gz");
        let path = repodata.join(&name);
        crate::fsutil::write_if_changed(&path, gz, Some(0o644))?;
        crate::testhook::kill_point("repodata");
        files.push(path);
        let _ = write!(
            repomd,
            "  <data type=\"{kind}\">\n    <checksum type=\"sha256\">{sha}</checksum>\n    <open-checksum type=\"sha256\">{open_sha}</open-checksum>\n    <location href=\"repodata/{name}\"/>\n    <timestamp>{ts}</timestamp>\n    <size>{size}</size>\n    <open-size>{open_size}</open-size>\n  </data>\n",
            ts = opts.revision,
            size = gz.len(),
        );
    }
    repomd.push_str("</repomd>\n");
    let repomd_path = repodata.join("repomd.xml");
    crate::fsutil::write_if_changed(&repomd_path, repomd.as_bytes(), Some(0o644))?;
    files.insert(0, repomd_path);
    // Remove metadata of earlier runs (other names) and anything createrepo_c may have left.
    for e in std::fs::read_dir(&repodata)
        .with_context(|| format!("cannot list {}", repodata.display()))?
    {
        let p = e?.path();
        if p.is_file() && !files.contains(&p) {
            std::fs::remove_file(&p)
                .with_context(|| format!("cannot remove stale {}", p.display()))?;
        }
    }
    Ok(RepodataOutput { files, packages: n })
}

fn gzip(data: &[u8], level: u32) -> Result<Vec<u8>> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::new(level),
    );
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// Passes bytes through while hashing them and counting them.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Reads one RPM (hash + header in one pass) and renders its three XML fragments.
pub fn read_package(repo_dir: &Path, href: &str, opts: &RepodataOptions) -> Result<PackageInfo> {
    let path = repo_dir.join(href);
    let f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut r = BufReader::with_capacity(
        64 * 1024,
        HashingReader {
            inner: f,
            hasher: Sha256::new(),
            count: 0,
        },
    );
    let md = PackageMetadata::parse(&mut r)
        .with_context(|| format!("{}: not a readable RPM", path.display()))?;
    io::copy(&mut r, &mut io::sink()).with_context(|| format!("cannot read {}", path.display()))?;
    let hr = r.into_inner();
    let sha256 = hex::encode(hr.hasher.finalize());
    let size = hr.count;
    render_package(&md, href, &sha256, size, opts)
        .with_context(|| format!("{}: cannot index the package", path.display()))
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if (c as u32) < 0x20 => {}
            c => o.push(c),
        }
    }
    o
}

fn flags_str(f: DependencyFlags) -> Option<&'static str> {
    let b = f.bits() & 0xe;
    match b {
        2 => Some("LT"),
        4 => Some("GT"),
        8 => Some("EQ"),
        10 => Some("LE"),
        12 => Some("GE"),
        _ => None,
    }
}

/// Splits `[E:]V[-R]` the way createrepo_c does (epoch "0" when absent).
fn split_evr(s: &str) -> (String, String, String) {
    if s.is_empty() {
        return (String::new(), String::new(), String::new());
    }
    let (e, rest) = match s.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()) => {
            (e.to_string(), r)
        }
        _ => ("0".to_string(), s),
    };
    let (v, r) = match rest.rsplit_once('-') {
        Some((v, r)) => (v.to_string(), r.to_string()),
        None => (rest.to_string(), String::new()),
    };
    (e, v, r)
}

fn is_primary_file(p: &str) -> bool {
    p.starts_with("/etc/") || p == "/usr/lib/sendmail" || p.contains("bin/")
}

struct Dep {
    name: String,
    flags: DependencyFlags,
    version: String,
}

fn deps(md: &PackageMetadata, name: IndexTag, flags: IndexTag, ver: IndexTag) -> Vec<Dep> {
    let h = &md.header;
    let (Ok(n), Ok(f), Ok(v)) = (
        h.get_entry_data_as_string_array(name),
        h.get_entry_data_as_u32_array(flags),
        h.get_entry_data_as_string_array(ver),
    ) else {
        return Vec::new();
    };
    n.iter()
        .zip(f.iter())
        .zip(v.iter())
        .map(|((n, f), v)| Dep {
            name: n.to_string(),
            flags: DependencyFlags::from_bits_retain(*f),
            version: v.to_string(),
        })
        .collect()
}

fn write_deps(out: &mut String, elem: &str, list: &[Dep], requires: bool) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "    <rpm:{elem}>");
    for d in list {
        let _ = write!(out, "      <rpm:entry name=\"{}\"", esc(&d.name));
        if let Some(fl) = flags_str(d.flags) {
            let (e, v, r) = split_evr(&d.version);
            let _ = write!(out, " flags=\"{fl}\"");
            if !e.is_empty() {
                let _ = write!(out, " epoch=\"{}\"", esc(&e));
            }
            if !v.is_empty() {
                let _ = write!(out, " ver=\"{}\"", esc(&v));
            }
            if !r.is_empty() {
                let _ = write!(out, " rel=\"{}\"", esc(&r));
            }
        }
        if requires && pre_flag(d.flags) {
            out.push_str(" pre=\"1\"");
        }
        out.push_str("/>\n");
    }
    let _ = writeln!(out, "    </rpm:{elem}>");
}

fn pre_flag(f: DependencyFlags) -> bool {
    f.intersects(
        DependencyFlags::PREREQ | DependencyFlags::SCRIPT_PRE | DependencyFlags::SCRIPT_POST,
    )
}

fn hstr(md: &PackageMetadata, tag: IndexTag) -> &str {
    md.header
        .get_entry_data_as_string(tag)
        .or_else(|_| md.header.get_entry_data_as_i18n_string(tag))
        .unwrap_or("")
}

fn archive_size(md: &PackageMetadata) -> u64 {
    let h = &md.header;
    let s = &md.signature;
    h.get_entry_data_as_u32(IndexTag::RPMTAG_ARCHIVESIZE)
        .map(u64::from)
        .or_else(|_| h.get_entry_data_as_u64(IndexTag::RPMTAG_LONGARCHIVESIZE))
        .or_else(|_| {
            s.get_entry_data_as_u32(IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE)
                .map(u64::from)
        })
        .or_else(|_| s.get_entry_data_as_u64(IndexSignatureTag::RPMSIGTAG_LONGARCHIVESIZE))
        .or_else(|_| h.get_entry_data_as_u64(IndexTag::RPMTAG_PAYLOADSIZEALT))
        .unwrap_or(0)
}

/// Renders the primary/filelists/other fragments of one package.
pub fn render_package(
    md: &PackageMetadata,
    href: &str,
    sha256: &str,
    size: u64,
    opts: &RepodataOptions,
) -> Result<PackageInfo> {
    let name = md.get_name()?;
    let arch = if md.is_source_package() {
        "src"
    } else {
        md.get_arch()?
    };
    let epoch = md.get_epoch().unwrap_or(0);
    let version = md.get_version()?;
    let release = md.get_release()?;
    let offs = md.get_package_segment_offsets();
    let build_time = md.get_build_time().unwrap_or(0);
    let installed = md.get_installed_size().unwrap_or(0);
    let vcs = hstr(md, IndexTag::RPMTAG_VCS);

    // Files, in header order.
    let entries = md.get_file_entries()?;
    let mut files: Vec<(String, &'static str)> = Vec::with_capacity(entries.len());
    let mut file_set = std::collections::HashSet::new();
    for e in &entries {
        let p = e.path().to_string_lossy().into_owned();
        let ty = if e.file_type() == FileType::Dir {
            "dir"
        } else if e.flags().contains(FileFlags::GHOST) {
            "ghost"
        } else {
            ""
        };
        file_set.insert(p.clone());
        files.push((p, ty));
    }

    let provides = deps(
        md,
        IndexTag::RPMTAG_PROVIDENAME,
        IndexTag::RPMTAG_PROVIDEFLAGS,
        IndexTag::RPMTAG_PROVIDEVERSION,
    );
    let provided: std::collections::HashSet<&str> =
        provides.iter().map(|d| d.name.as_str()).collect();
    let mut requires = Vec::new();
    let mut seen_req: std::collections::HashMap<String, Vec<(u32, String, bool)>> =
        Default::default();
    for d in deps(
        md,
        IndexTag::RPMTAG_REQUIRENAME,
        IndexTag::RPMTAG_REQUIREFLAGS,
        IndexTag::RPMTAG_REQUIREVERSION,
    ) {
        if d.name.starts_with("rpmlib(") {
            continue;
        }
        if file_set.contains(&d.name) && is_primary_file(&d.name) {
            continue;
        }
        if provided.contains(d.name.as_str()) {
            continue;
        }
        let key = (d.flags.bits() & 0xe, d.version.clone(), pre_flag(d.flags));
        let seen = seen_req.entry(d.name.clone()).or_default();
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        requires.push(d);
    }
    let conflicts = deps(
        md,
        IndexTag::RPMTAG_CONFLICTNAME,
        IndexTag::RPMTAG_CONFLICTFLAGS,
        IndexTag::RPMTAG_CONFLICTVERSION,
    );
    let obsoletes = deps(
        md,
        IndexTag::RPMTAG_OBSOLETENAME,
        IndexTag::RPMTAG_OBSOLETEFLAGS,
        IndexTag::RPMTAG_OBSOLETEVERSION,
    );
    let weak = [
        (
            "suggests",
            IndexTag::RPMTAG_SUGGESTNAME,
            IndexTag::RPMTAG_SUGGESTFLAGS,
            IndexTag::RPMTAG_SUGGESTVERSION,
        ),
        (
            "enhances",
            IndexTag::RPMTAG_ENHANCENAME,
            IndexTag::RPMTAG_ENHANCEFLAGS,
            IndexTag::RPMTAG_ENHANCEVERSION,
        ),
        (
            "recommends",
            IndexTag::RPMTAG_RECOMMENDNAME,
            IndexTag::RPMTAG_RECOMMENDFLAGS,
            IndexTag::RPMTAG_RECOMMENDVERSION,
        ),
        (
            "supplements",
            IndexTag::RPMTAG_SUPPLEMENTNAME,
            IndexTag::RPMTAG_SUPPLEMENTFLAGS,
            IndexTag::RPMTAG_SUPPLEMENTVERSION,
        ),
    ];

    let ver_attrs = format!(
        "epoch=\"{epoch}\" ver=\"{}\" rel=\"{}\"",
        esc(version),
        esc(release)
    );
    let mut p = String::with_capacity(2048);
    p.push_str("<package type=\"rpm\">\n");
    let _ = writeln!(p, "  <name>{}</name>", esc(name));
    let _ = writeln!(p, "  <arch>{}</arch>", esc(arch));
    if vcs.is_empty() {
        let _ = writeln!(p, "  <version {ver_attrs}/>");
    } else {
        let _ = writeln!(p, "  <version {ver_attrs} vcs=\"{}\"/>", esc(vcs));
    }
    let _ = writeln!(
        p,
        "  <checksum type=\"sha256\" pkgid=\"YES\">{sha256}</checksum>"
    );
    let _ = writeln!(
        p,
        "  <summary>{}</summary>",
        esc(hstr(md, IndexTag::RPMTAG_SUMMARY))
    );
    let _ = writeln!(
        p,
        "  <description>{}</description>",
        esc(hstr(md, IndexTag::RPMTAG_DESCRIPTION))
    );
    let _ = writeln!(
        p,
        "  <packager>{}</packager>",
        esc(hstr(md, IndexTag::RPMTAG_PACKAGER))
    );
    let _ = writeln!(p, "  <url>{}</url>", esc(hstr(md, IndexTag::RPMTAG_URL)));
    let _ = writeln!(
        p,
        "  <time file=\"{}\" build=\"{build_time}\"/>",
        opts.revision
    );
    let _ = writeln!(
        p,
        "  <size package=\"{size}\" installed=\"{installed}\" archive=\"{}\"/>",
        archive_size(md)
    );
    let _ = writeln!(p, "  <location href=\"{}\"/>", esc(href));
    p.push_str("  <format>\n");
    for (elem, tag) in [
        ("license", IndexTag::RPMTAG_LICENSE),
        ("vendor", IndexTag::RPMTAG_VENDOR),
        ("group", IndexTag::RPMTAG_GROUP),
        ("buildhost", IndexTag::RPMTAG_BUILDHOST),
        ("sourcerpm", IndexTag::RPMTAG_SOURCERPM),
    ] {
        let _ = writeln!(p, "    <rpm:{elem}>{}</rpm:{elem}>", esc(hstr(md, tag)));
    }
    let _ = writeln!(
        p,
        "    <rpm:header-range start=\"{}\" end=\"{}\"/>",
        offs.header, offs.payload
    );
    write_deps(&mut p, "provides", &provides, false);
    write_deps(&mut p, "requires", &requires, true);
    write_deps(&mut p, "conflicts", &conflicts, false);
    write_deps(&mut p, "obsoletes", &obsoletes, false);
    for (elem, n, f, v) in weak {
        write_deps(&mut p, elem, &deps(md, n, f, v), false);
    }
    for (path, ty) in &files {
        if is_primary_file(path) {
            write_file(&mut p, "    ", path, ty);
        }
    }
    p.push_str("  </format>\n</package>\n");

    let mut fl = String::with_capacity(256 + files.len() * 64);
    let _ = writeln!(
        fl,
        "<package pkgid=\"{sha256}\" name=\"{}\" arch=\"{}\">\n  <version {ver_attrs}/>",
        esc(name),
        esc(arch)
    );
    for (path, ty) in &files {
        write_file(&mut fl, "  ", path, ty);
    }
    fl.push_str("</package>\n");

    let mut ot = String::with_capacity(512);
    let _ = writeln!(
        ot,
        "<package pkgid=\"{sha256}\" name=\"{}\" arch=\"{}\">\n  <version {ver_attrs}/>",
        esc(name),
        esc(arch)
    );
    let mut log: Vec<(String, u64, String)> = md
        .get_changelog_entries()
        .unwrap_or_default()
        .into_iter()
        .take(opts.changelog_limit)
        .map(|c| {
            (
                c.name.trim_end_matches(' ').to_string(),
                c.timestamp,
                c.description,
            )
        })
        .collect();
    // createrepo_c writes them oldest first and bumps equal dates so they stay distinct.
    log.reverse();
    bump_equal_dates(&mut log);
    for (author, date, text) in &log {
        let _ = writeln!(
            ot,
            "  <changelog author=\"{}\" date=\"{date}\">{}</changelog>",
            esc(author),
            esc(text)
        );
    }
    ot.push_str("</package>\n");

    Ok(PackageInfo {
        href: href.to_string(),
        sha256: sha256.to_string(),
        size,
        header_start: offs.header,
        header_end: offs.payload,
        primary: p,
        filelists: fl,
        other: ot,
    })
}

/// createrepo_c: walking the header order (newest first), when an entry has the same date as the
/// previous one, the already-emitted (newer) entries with that date are bumped by one second.
fn bump_equal_dates(log_oldest_first: &mut [(String, u64, String)]) {
    // Re-walk in header order (newest first) = reverse of our order.
    let n = log_oldest_first.len();
    let mut last: Option<u64> = None;
    for k in 0..n {
        let idx = n - 1 - k; // header position k
        let t = log_oldest_first[idx].1;
        if last == Some(t) {
            let mut tmp = t;
            let mut j = idx + 1;
            while j < n && log_oldest_first[j].1 == tmp {
                log_oldest_first[j].1 += 1;
                tmp += 1;
                j += 1;
            }
        } else {
            last = Some(t);
        }
    }
}

fn write_file(out: &mut String, indent: &str, path: &str, ty: &str) {
    if ty.is_empty() {
        let _ = writeln!(out, "{indent}<file>{}</file>", esc(path));
    } else {
        let _ = writeln!(out, "{indent}<file type=\"{ty}\">{}</file>", esc(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evr_split() {
        assert_eq!(
            split_evr("1:2.0-3.el8"),
            ("1".into(), "2.0".into(), "3.el8".into())
        );
        assert_eq!(split_evr("2.0"), ("0".into(), "2.0".into(), "".into()));
        assert_eq!(split_evr(""), ("".into(), "".into(), "".into()));
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("a<b>&\"c\u{1}"), "a&lt;b&gt;&amp;&quot;c");
    }
}
