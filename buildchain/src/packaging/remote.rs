//! Reading remote yum repositories over HTTP(S): `repodata/repomd.xml` → `primary.xml.gz` →
//! packages (NEVRA, checksum, size, location, provides/requires, primary files).

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::evr::Evr;

/// A dependency as listed in primary.xml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteDep {
    /// Capability name.
    pub name: String,
    /// `EQ`, `GE`, … (empty = any version).
    pub flags: String,
    /// Version constraint (`[E:]V[-R]`), when `flags` is set.
    pub evr: Option<Evr>,
}

/// One package of a remote repository.
#[derive(Clone, Debug)]
pub struct RemotePackage {
    /// Name.
    pub name: String,
    /// Architecture.
    pub arch: String,
    /// Epoch, version, release.
    pub evr: Evr,
    /// Checksum type named by the repository (`sha256`).
    pub checksum_type: String,
    /// Checksum of the RPM (hex).
    pub checksum: String,
    /// Size of the RPM file.
    pub size: u64,
    /// Location relative to the repository base URL.
    pub href: String,
    /// Provided capabilities.
    pub provides: Vec<RemoteDep>,
    /// Required capabilities.
    pub requires: Vec<RemoteDep>,
    /// Files listed in primary.xml (`/etc/*`, `*bin/*`).
    pub files: Vec<String>,
}

impl RemotePackage {
    /// `name-[epoch:]version-release.arch`.
    pub fn nevra(&self) -> String {
        if self.evr.epoch == 0 {
            format!(
                "{}-{}-{}.{}",
                self.name, self.evr.version, self.evr.release, self.arch
            )
        } else {
            format!(
                "{}-{}:{}-{}.{}",
                self.name, self.evr.epoch, self.evr.version, self.evr.release, self.arch
            )
        }
    }
}

/// A remote repository's package list.
#[derive(Clone, Debug)]
pub struct RemoteRepo {
    /// Name given by the configuration.
    pub name: String,
    /// Base URL (ends without `/`).
    pub baseurl: String,
    /// Packages of its primary.xml.
    pub packages: Vec<RemotePackage>,
}

/// An entry of repomd.xml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepomdEntry {
    /// `primary`, `filelists`, …
    pub kind: String,
    /// Location relative to the base URL.
    pub href: String,
    /// Checksum type.
    pub checksum_type: String,
    /// Checksum (hex) of the file as stored.
    pub checksum: String,
}

/// An HTTP agent with sane timeouts and HTTP errors as errors: connect 30 s, whole request
/// 600 s, and no byte for `BUILDCHAIN_FETCH_STALL_SECS` (default 60) fails a read.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(600)))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(
            crate::images::registry::ClientOptions::default().stall_timeout,
        ))
        .build()
        .into()
}

/// GETs a (metadata) URL fully into memory (at most 1 GiB).
pub fn http_get(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>> {
    let mut resp = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url} failed"))?;
    resp.body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .with_context(|| format!("GET {url}: cannot read the body"))
}

/// Opens a streaming GET (for package downloads).
pub fn http_stream(agent: &ureq::Agent, url: &str) -> Result<impl Read + use<>> {
    let resp = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url} failed"))?;
    Ok(resp.into_body().into_with_config().limit(u64::MAX).reader())
}

fn attr(e: &BytesStart, name: &str) -> Result<Option<String>> {
    for a in e.attributes() {
        let a = a?;
        if a.key.as_ref() == name {
            return Ok(Some(
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)?
                    .into_owned(),
            ));
        }
    }
    Ok(None)
}

fn entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let n = name.strip_prefix('#')?;
            let code = match n.strip_prefix('x') {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => n.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// Parses repomd.xml.
pub fn parse_repomd(xml: &[u8], origin: &str) -> Result<Vec<RepomdEntry>> {
    let mut r = Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut cur: Option<RepomdEntry> = None;
    let mut in_checksum = false;
    loop {
        let ev = r
            .read_event_into(&mut buf)
            .with_context(|| format!("{origin}: invalid XML at byte {}", r.buffer_position()))?;
        match ev {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "data" => {
                    cur = Some(RepomdEntry {
                        kind: attr(&e, "type")?.unwrap_or_default(),
                        href: String::new(),
                        checksum_type: String::new(),
                        checksum: String::new(),
                    })
                }
                "location" => {
                    if let Some(c) = cur.as_mut() {
                        c.href = attr(&e, "href")?.unwrap_or_default();
                    }
                }
                "checksum" => {
                    if let Some(c) = cur.as_mut() {
                        c.checksum_type = attr(&e, "type")?.unwrap_or_default();
                        in_checksum = true;
                    }
                }
                _ => {}
            },
            Event::Text(t) if in_checksum => {
                if let Some(c) = cur.as_mut() {
                    c.checksum.push_str(t.as_ref().trim());
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                "checksum" => in_checksum = false,
                "data" => {
                    if let Some(c) = cur.take() {
                        out.push(c);
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

#[derive(PartialEq)]
enum Field {
    None,
    Name,
    Arch,
    Checksum,
    File,
}

/// Parses primary.xml (already decompressed).
pub fn parse_primary(input: impl BufRead, origin: &str) -> Result<Vec<RemotePackage>> {
    let mut r = Reader::from_reader(input);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut cur: Option<RemotePackage> = None;
    let mut field = Field::None;
    let mut text = String::new();
    // 0 = none, 1 = provides, 2 = requires.
    let mut deps_kind = 0u8;
    loop {
        let ev = r
            .read_event_into(&mut buf)
            .with_context(|| format!("{origin}: invalid XML at byte {}", r.buffer_position()))?;
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                let qname = e.name();
                let n = qname.as_ref();
                match n {
                    "package" => {
                        cur = Some(RemotePackage {
                            name: String::new(),
                            arch: String::new(),
                            evr: Evr::parse(""),
                            checksum_type: String::new(),
                            checksum: String::new(),
                            size: 0,
                            href: String::new(),
                            provides: Vec::new(),
                            requires: Vec::new(),
                            files: Vec::new(),
                        })
                    }
                    _ if cur.is_none() => {}
                    "name" => field = Field::Name,
                    "arch" => field = Field::Arch,
                    "file" => field = Field::File,
                    "checksum" => {
                        field = Field::Checksum;
                        if let Some(c) = cur.as_mut() {
                            c.checksum_type = attr(&e, "type")?.unwrap_or_default();
                        }
                    }
                    "version" => {
                        if let Some(c) = cur.as_mut() {
                            c.evr = Evr {
                                epoch: attr(&e, "epoch")?.and_then(|s| s.parse().ok()).unwrap_or(0),
                                version: attr(&e, "ver")?.unwrap_or_default(),
                                release: attr(&e, "rel")?.unwrap_or_default(),
                            };
                        }
                    }
                    "size" => {
                        if let Some(c) = cur.as_mut() {
                            c.size = attr(&e, "package")?
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(0);
                        }
                    }
                    "location" => {
                        if let Some(c) = cur.as_mut() {
                            c.href = attr(&e, "href")?.unwrap_or_default();
                        }
                    }
                    "rpm:provides" => deps_kind = 1,
                    "rpm:requires" => deps_kind = 2,
                    "rpm:conflicts" | "rpm:obsoletes" | "rpm:recommends" | "rpm:suggests"
                    | "rpm:enhances" | "rpm:supplements" => deps_kind = 0,
                    "rpm:entry" if deps_kind != 0 => {
                        let flags = attr(&e, "flags")?.unwrap_or_default();
                        let evr = if flags.is_empty() {
                            None
                        } else {
                            Some(Evr {
                                epoch: attr(&e, "epoch")?.and_then(|s| s.parse().ok()).unwrap_or(0),
                                version: attr(&e, "ver")?.unwrap_or_default(),
                                release: attr(&e, "rel")?.unwrap_or_default(),
                            })
                        };
                        let d = RemoteDep {
                            name: attr(&e, "name")?.unwrap_or_default(),
                            flags,
                            evr,
                        };
                        if let Some(c) = cur.as_mut() {
                            if deps_kind == 1 {
                                c.provides.push(d);
                            } else {
                                c.requires.push(d);
                            }
                        }
                    }
                    _ => {}
                }
                text.clear();
            }
            Event::Text(t) if field != Field::None => text.push_str(t.as_ref()),
            Event::CData(t) if field != Field::None => text.push_str(t.as_ref()),
            Event::GeneralRef(g) if field != Field::None => {
                let name = g.into_inner();
                match entity(&name) {
                    Some(c) => text.push(c),
                    None => bail!("{origin}: unknown XML entity &{name};"),
                }
            }
            Event::End(e) => {
                let qname = e.name();
                match qname.as_ref() {
                    "package" => {
                        if let Some(c) = cur.take() {
                            out.push(c);
                        }
                    }
                    "rpm:provides" | "rpm:requires" => deps_kind = 0,
                    _ => {
                        if let Some(c) = cur.as_mut() {
                            let t = std::mem::take(&mut text);
                            match field {
                                Field::Name => c.name = t,
                                Field::Arch => c.arch = t,
                                Field::Checksum => c.checksum = t.trim().to_string(),
                                Field::File => c.files.push(t),
                                Field::None => {}
                            }
                        }
                        field = Field::None;
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

/// Joins a base URL and a relative href.
pub fn join_url(base: &str, href: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        href.trim_start_matches('/')
    )
}

/// Fetches and parses a repository's primary metadata (verifying its checksum from repomd.xml).
pub fn load_repo(agent: &ureq::Agent, name: &str, baseurl: &str) -> Result<RemoteRepo> {
    let baseurl = baseurl.trim_end_matches('/').to_string();
    let repomd_url = join_url(&baseurl, "repodata/repomd.xml");
    let repomd = http_get(agent, &repomd_url)
        .with_context(|| format!("repository {name}: cannot read its repomd.xml"))?;
    let entries = parse_repomd(&repomd, &repomd_url)?;
    let Some(primary) = entries.iter().find(|e| e.kind == "primary") else {
        bail!("repository {name}: {repomd_url} lists no primary metadata");
    };
    let url = join_url(&baseurl, &primary.href);
    let bytes = http_get(agent, &url)?;
    if primary.checksum_type == "sha256" {
        let got = crate::fsutil::sha256_bytes(&bytes);
        if got != primary.checksum {
            bail!(
                "repository {name}: {url} does not match repomd.xml: expected sha256:{}, got sha256:{got}",
                primary.checksum
            );
        }
    }
    let packages = if primary.href.ends_with(".gz") {
        parse_primary(
            BufReader::new(flate2::read::GzDecoder::new(&bytes[..])),
            &url,
        )?
    } else if primary.href.ends_with(".xml") {
        parse_primary(&bytes[..], &url)?
    } else {
        bail!(
            "repository {name}: {url}: only gzip or plain primary metadata is supported (ask the \
             mirror for createrepo_c --general-compress-type=gz)"
        );
    };
    Ok(RemoteRepo {
        name: name.to_string(),
        baseurl,
        packages,
    })
}
