//! Built ISOs as OCI artifacts (SPEC §14): `publish` pushes the ISO, its SBOM and its content
//! index as the layers of one artifact manifest; `pull` gets them back, every blob verified.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::client::Client;
use super::{CacheUrl, Config, Mode};
use crate::fsutil::{self, AtomicFile};

/// `artifactType` of a published ISO.
pub const ISO_ARTIFACT_TYPE: &str = "application/vnd.buildchain.iso.v1";
/// Media type of the ISO layer.
pub const ISO_MEDIA_TYPE: &str = "application/vnd.buildchain.iso.v1.iso9660";
/// Media type of the SBOM layer.
pub const SBOM_MEDIA_TYPE: &str = "application/spdx+json";
/// Media type of the content index layer.
pub const CONTENTS_MEDIA_TYPE: &str = "application/vnd.buildchain.contents.v1+json";
/// OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The empty config descriptor's media type (`{}`).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const TITLE: &str = "org.opencontainers.image.title";

/// `oci://HOST[:PORT]/REPO:TAG` or `…/REPO@sha256:HEX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactRef {
    /// Registry and repository.
    pub url: CacheUrl,
    /// Tag or `sha256:…` digest.
    pub reference: String,
}

impl ArtifactRef {
    /// Parses a reference; `oci+http://` only for loopback hosts.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            anyhow!("{s:?}: expected oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:DIGEST")
        };
        let slash = s
            .find("://")
            .and_then(|i| s[i + 3..].find('/').map(|j| i + 3 + j))
            .ok_or_else(bad)?;
        let (head, path) = s.split_at(slash);
        let (repo, reference) = if let Some((r, d)) = path.split_once('@') {
            let hex = d.strip_prefix("sha256:").ok_or_else(bad)?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            (r, d.to_ascii_lowercase())
        } else {
            let (r, t) = path.rsplit_once(':').ok_or_else(bad)?;
            let ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
            if t.is_empty() || t.len() > 128 || !t.chars().all(ok) || t.starts_with(['.', '-']) {
                bail!("{s:?}: tag {t:?} must be 1-128 letters, digits, . _ - (not starting with . or -)");
            }
            (r, t.to_string())
        };
        let base = format!("{head}{repo}");
        let url = CacheUrl::parse(&base).map_err(|e| {
            anyhow!(
                "{}",
                e.to_string()
                    .replace(&format!("remote cache {base:?}"), &format!("{s:?}"))
            )
        })?;
        Ok(ArtifactRef { url, reference })
    }
}

impl std::fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(f, "{}{sep}{}", self.url, self.reference)
    }
}

fn client(r: &ArtifactRef, ca: Option<&Path>) -> Result<Client> {
    let ca = ca
        .map(Path::to_path_buf)
        .or_else(|| super::env_nonempty("BUILDCHAIN_REMOTE_CACHE_CA").map(PathBuf::from));
    Client::new(&Config {
        url: r.url.clone(),
        mode: Mode::ReadWrite,
        ca,
    })
}

/// One layer to push.
struct Layer {
    title: String,
    media_type: &'static str,
    hex: String,
    size: u64,
    /// In memory (small files) or streamed from a file.
    bytes: Option<Vec<u8>>,
    path: Option<PathBuf>,
}

fn hash_file(p: &Path) -> Result<(String, u64)> {
    let mut f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
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

fn file_name(p: &Path) -> Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{}: no file name", p.display()))
}

/// Reads `/name` from the ISO at `iso`, `None` when absent.
fn from_iso(iso: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let f = File::open(iso).with_context(|| format!("cannot open {}", iso.display()))?;
    let mut r = iso9660_writer::IsoReader::open(std::io::BufReader::new(f))
        .map_err(|e| anyhow!("{}: not an ISO image: {e}", iso.display()))?;
    match r
        .find(name)
        .map_err(|e| anyhow!("{}: {e}", iso.display()))?
    {
        Some(e) if e.kind == iso9660_writer::EntryKind::File => {
            let mut out = Vec::new();
            r.read_file(&e, &mut out)
                .map_err(|x| anyhow!("{}: /{name}: {x}", iso.display()))?;
            Ok(Some(out))
        }
        _ => Ok(None),
    }
}

/// What `publish` pushed.
#[derive(Debug)]
pub struct Published {
    /// Digest of the manifest (`sha256:…`).
    pub digest: String,
    /// `(title, digest, size)` of each layer.
    pub layers: Vec<(String, String, u64)>,
}

/// Pushes `iso` (with its SBOM `ISO-STEM.spdx.json` next to it, else `/sbom.spdx.json` in it,
/// and its `/CONTENTS.json`) to `target` as one artifact manifest; big blobs go in chunks,
/// streamed from disk.
pub fn publish(target: &ArtifactRef, iso: &Path, ca: Option<&Path>) -> Result<Published> {
    if target.reference.starts_with("sha256:") {
        bail!("{target}: publish needs a tag (oci://HOST/REPO:TAG)");
    }
    let iso_name = file_name(iso)?;
    let (iso_hex, iso_size) = hash_file(iso)?;
    let mut layers = vec![Layer {
        title: iso_name,
        media_type: ISO_MEDIA_TYPE,
        hex: iso_hex,
        size: iso_size,
        bytes: None,
        path: Some(iso.to_path_buf()),
    }];
    let sbom_path = iso.with_extension("spdx.json");
    let sbom = if sbom_path.is_file() {
        std::fs::read(&sbom_path).with_context(|| format!("cannot read {}", sbom_path.display()))?
    } else {
        from_iso(iso, "sbom.spdx.json")?.ok_or_else(|| {
            anyhow!(
                "{}: no SBOM ({} nor /sbom.spdx.json in the ISO)",
                iso.display(),
                sbom_path.display()
            )
        })?
    };
    let contents = from_iso(iso, crate::trust::contents::CONTENTS_FILE)?.ok_or_else(|| {
        anyhow!(
            "{}: no /{} in the ISO (not a buildchain ISO?)",
            iso.display(),
            crate::trust::contents::CONTENTS_FILE
        )
    })?;
    for (title, media_type, bytes) in [
        (file_name(&sbom_path)?, SBOM_MEDIA_TYPE, sbom),
        (
            crate::trust::contents::CONTENTS_FILE.to_string(),
            CONTENTS_MEDIA_TYPE,
            contents,
        ),
    ] {
        layers.push(Layer {
            title,
            media_type,
            hex: fsutil::sha256_bytes(&bytes),
            size: bytes.len() as u64,
            bytes: Some(bytes),
            path: None,
        });
    }
    let empty = b"{}".to_vec();
    layers.push(Layer {
        title: String::new(),
        media_type: EMPTY_MEDIA_TYPE,
        hex: fsutil::sha256_bytes(&empty),
        size: 2,
        bytes: Some(empty),
        path: None,
    });

    let c = client(target, ca)?;
    for l in &layers {
        if c.head(&l.hex)
            .with_context(|| format!("{target}: cannot reach the registry"))?
            == Some(l.size)
        {
            continue;
        }
        let open = |off: u64, len: u64| -> Result<Box<dyn Read>> {
            if let Some(b) = &l.bytes {
                let mut cur = Cursor::new(b.clone());
                cur.set_position(off);
                return Ok(Box::new(cur.take(len)));
            }
            let p = l
                .path
                .as_ref()
                .ok_or_else(|| anyhow!("layer without data"))?;
            let mut f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            f.seek(SeekFrom::Start(off))?;
            Ok(Box::new(f.take(len)))
        };
        c.push(&l.hex, l.size, None, &open)
            .with_context(|| format!("{target}: cannot push {} (sha256:{})", l.title, l.hex))?;
    }
    let config = layers.pop().expect("config pushed last");
    let desc = |l: &Layer| {
        json!({
            "mediaType": l.media_type,
            "digest": format!("sha256:{}", l.hex),
            "size": l.size,
            "annotations": {TITLE: l.title},
        })
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ISO_ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": format!("sha256:{}", config.hex),
            "size": config.size,
            "data": "e30=",
        },
        "layers": layers.iter().map(desc).collect::<Vec<_>>(),
    });
    let body = serde_json::to_vec_pretty(&manifest)?;
    c.put_manifest(&target.reference, MANIFEST_MEDIA_TYPE, &body)
        .with_context(|| format!("{target}: cannot push the manifest"))?;
    Ok(Published {
        digest: format!("sha256:{}", fsutil::sha256_bytes(&body)),
        layers: layers
            .iter()
            .map(|l| (l.title.clone(), format!("sha256:{}", l.hex), l.size))
            .collect(),
    })
}

/// A layer of a pulled manifest.
struct Wanted {
    title: String,
    hex: String,
    size: u64,
}

fn parse_manifest(src: &ArtifactRef, body: &[u8]) -> Result<Vec<Wanted>> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| anyhow!("{src}: the manifest is not JSON: {e}"))?;
    let at = v.get("artifactType").and_then(Value::as_str);
    if at != Some(ISO_ARTIFACT_TYPE) {
        bail!("{src}: not a buildchain ISO artifact (artifactType {at:?}, expected {ISO_ARTIFACT_TYPE:?})");
    }
    let layers = v
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{src}: the manifest has no layers"))?;
    let mut out: Vec<Wanted> = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let digest = l.get("digest").and_then(Value::as_str).unwrap_or("");
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| anyhow!("{src}: layer {i}: unsupported digest {digest:?}"))?;
        let size = l
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("{src}: layer {digest}: no size"))?;
        let title = l
            .pointer("/annotations/org.opencontainers.image.title")
            .and_then(Value::as_str)
            .unwrap_or("");
        if title.is_empty()
            || title == "."
            || title == ".."
            || title.contains(['/', '\\', '\0'])
            || title.starts_with('.')
        {
            bail!("{src}: layer {digest}: title {title:?} is not a plain file name");
        }
        if out.iter().any(|w| w.title == title) {
            bail!("{src}: two layers titled {title:?}");
        }
        out.push(Wanted {
            title: title.to_string(),
            hex: hex.to_ascii_lowercase(),
            size,
        });
    }
    Ok(out)
}

/// Gets the artifact `src` into `out` (created when missing): every blob is verified by size
/// and digest before any file appears; on any error nothing is left behind.
pub fn pull(src: &ArtifactRef, out: &Path, ca: Option<&Path>) -> Result<Vec<PathBuf>> {
    let c = client(src, ca)?;
    let body = c
        .get_manifest(&src.reference, MANIFEST_MEDIA_TYPE)
        .with_context(|| format!("{src}: cannot get the manifest"))?;
    if let Some(want) = src.reference.strip_prefix("sha256:") {
        let got = fsutil::sha256_bytes(&body);
        if got != want {
            bail!("{src}: the registry returned a manifest with digest sha256:{got}");
        }
    }
    let wanted = parse_manifest(src, &body)?;
    let created = !out.exists();
    let r = (|| -> Result<Vec<PathBuf>> {
        fsutil::create_dir_all(out)?;
        let mut done = Vec::new();
        for w in &wanted {
            let dest = out.join(&w.title);
            let mut f = AtomicFile::create(&dest)?;
            let mut body = c
                .get(&w.hex)
                .with_context(|| format!("{src}: cannot get {} (sha256:{})", w.title, w.hex))?
                .into_reader();
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            loop {
                let k = body
                    .read(&mut buf)
                    .with_context(|| format!("{src}: reading {} (sha256:{})", w.title, w.hex))?;
                if k == 0 {
                    break;
                }
                n += k as u64;
                if n > w.size {
                    bail!(
                        "{src}: blob sha256:{} ({}) is larger than the manifest's {} bytes; refused",
                        w.hex,
                        w.title,
                        w.size
                    );
                }
                h.update(&buf[..k]);
                f.write_all(&buf[..k])
                    .with_context(|| format!("cannot write {}", dest.display()))?;
            }
            let got = hex::encode(h.finalize());
            if n != w.size || got != w.hex {
                bail!(
                    "{src}: blob sha256:{} ({}) does not verify: got sha256:{got}, {n} bytes (expected {}); refused",
                    w.hex,
                    w.title,
                    w.size
                );
            }
            done.push((f, dest));
        }
        let mut paths = Vec::new();
        for (f, dest) in done {
            f.commit()?;
            paths.push(dest);
        }
        Ok(paths)
    })();
    if r.is_err() && created {
        let _ = std::fs::remove_dir(out);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_refs() {
        let r = ArtifactRef::parse("oci://127.0.0.1:5000/dist/metalk8s:130.0.0").unwrap();
        assert_eq!(r.url.host, "127.0.0.1:5000");
        assert_eq!(r.url.repository, "dist/metalk8s");
        assert_eq!(r.reference, "130.0.0");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/dist/metalk8s:130.0.0");
        let d = format!("oci+http://localhost/a@sha256:{}", "ab".repeat(32));
        assert_eq!(ArtifactRef::parse(&d).unwrap().to_string(), d);
        assert_eq!(
            ArtifactRef::parse("oci://h/repo").unwrap_err().to_string(),
            "\"oci://h/repo\": expected oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:DIGEST"
        );
        assert!(ArtifactRef::parse("oci://h:5000/repo").is_err());
        assert_eq!(
            ArtifactRef::parse("oci+http://example.com/r:t").unwrap_err().to_string(),
            "\"oci+http://example.com/r:t\": plain HTTP is allowed only for loopback hosts (127.0.0.1, ::1, localhost); use oci:// (HTTPS)"
        );
        assert!(ArtifactRef::parse("oci://h/r:-x").is_err());
    }
}
