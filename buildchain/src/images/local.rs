//! Local image builds without Docker: `images/<name>/image.yaml` → deterministic layers, OCI
//! config and manifest, all put into the [`Store`].
//!
//! ```yaml
//! base: metalk8s-base          # optional: another inventory image
//! config:
//!   entrypoint: ["/bin/hello"]
//!   cmd: ["--port", "8080"]
//!   env: {LANG: C.UTF-8}
//!   labels: {org.opencontainers.image.title: hello}
//!   user: "65534"
//!   workdir: /srv
//!   exposed_ports: ["8080/tcp"]
//! layers:
//!   - comment: application files
//!     files:
//!       - {src: rootfs, dest: /}                  # a directory (recursive) or a file, relative to images/<name>/
//!       - {dest: /etc/motd, content: "hello\n", mode: "0644"}
//!       - {dest: /bin/sh, symlink: busybox}
//!       - {dest: /tmp, dir: true, mode: "1777"}
//! ```
//!
//! Layers are tars with entries sorted by path, uid/gid 0, empty owner names, mtime =
//! `SOURCE_DATE_EPOCH` (else 0), modes 0644/0755 from the executable bit (or `mode`), gzip-compressed
//! with no file name, mtime 0 and level 6: the same sources give the same digests on any checkout.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::manifest::{
    Descriptor, Manifest, Platform, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST,
};
use super::{ImageData, Resolved};
use crate::store::Store;

/// `image.yaml`.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ImageDef {
    /// Base image (an inventory name).
    #[serde(default)]
    pub base: Option<String>,
    /// Runtime configuration.
    #[serde(default)]
    pub config: ConfigDef,
    /// Layers, bottom first.
    #[serde(default)]
    pub layers: Vec<LayerDef>,
}

/// The runnable configuration of a local image.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigDef {
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `Env` (merged over the base's; sorted).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `Labels` (merged over the base's).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `User`.
    #[serde(default)]
    pub user: Option<String>,
    /// `WorkingDir`.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `ExposedPorts` (`8080/tcp`).
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    /// `StopSignal`.
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// One layer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerDef {
    /// Shown in the image history.
    #[serde(default)]
    pub comment: Option<String>,
    /// Store the layer uncompressed (`tar` media type) instead of gzip.
    #[serde(default)]
    pub uncompressed: bool,
    /// What the layer holds.
    pub files: Vec<FileDef>,
}

/// One item of a layer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDef {
    /// Absolute path in the image.
    pub dest: String,
    /// File or directory (recursive) relative to the image directory.
    #[serde(default)]
    pub src: Option<String>,
    /// Inline file content.
    #[serde(default)]
    pub content: Option<String>,
    /// Symlink target.
    #[serde(default)]
    pub symlink: Option<String>,
    /// An (empty) directory.
    #[serde(default)]
    pub dir: bool,
    /// Octal mode as a string (`"0755"`); for `src` directories it applies to the files.
    #[serde(default)]
    pub mode: Option<String>,
}

impl ImageDef {
    /// Loads `<dir>/image.yaml`.
    pub fn load(dir: &Path) -> Result<Self> {
        crate::yamlerr::load_yaml(&dir.join("image.yaml"))
    }
}

#[derive(Clone, Debug)]
enum Entry {
    Dir(u32),
    File(u32, PathBuf),
    Inline(u32, Vec<u8>),
    Symlink(String),
}

fn parse_mode(m: &str, at: &str) -> Result<u32> {
    let v = u32::from_str_radix(m.trim_start_matches("0o"), 8)
        .map_err(|_| anyhow!("{at}: mode {m:?} is not an octal number such as \"0755\""))?;
    if v > 0o7777 {
        bail!("{at}: mode {m:?} out of range");
    }
    Ok(v)
}

/// Normalises an image path: no `..`, no leading `/`, no trailing `/`.
fn image_path(dest: &str, at: &str) -> Result<String> {
    let mut parts = Vec::new();
    for c in Path::new(dest).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| anyhow!("{at}: non UTF-8 path {dest:?}"))?
                    .to_string(),
            ),
            _ => bail!("{at}: path {dest:?} must not contain `..`"),
        }
    }
    Ok(parts.join("/"))
}

fn add_parents(entries: &mut BTreeMap<String, Entry>, path: &str) {
    let mut acc = String::new();
    let comps: Vec<&str> = path.split('/').collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(c);
        entries.entry(acc.clone()).or_insert(Entry::Dir(0o755));
    }
}

fn collect_entries(
    image_dir: &Path,
    repo_root: &Path,
    layer: &LayerDef,
    at: &str,
) -> Result<BTreeMap<String, Entry>> {
    use std::os::unix::fs::PermissionsExt;
    let root = repo_root
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", repo_root.display()))?;
    let mut entries = BTreeMap::new();
    for f in &layer.files {
        let dest = image_path(&f.dest, at)?;
        let mode = f.mode.as_deref().map(|m| parse_mode(m, at)).transpose()?;
        let kinds = [
            f.src.is_some(),
            f.content.is_some(),
            f.symlink.is_some(),
            f.dir,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if kinds != 1 {
            bail!(
                "{at}: entry {:?} needs exactly one of src, content, symlink, dir",
                f.dest
            );
        }
        if let Some(c) = &f.content {
            add_parents(&mut entries, &dest);
            entries.insert(
                dest,
                Entry::Inline(mode.unwrap_or(0o644), c.as_bytes().to_vec()),
            );
        } else if let Some(t) = &f.symlink {
            add_parents(&mut entries, &dest);
            entries.insert(dest, Entry::Symlink(t.clone()));
        } else if f.dir {
            add_parents(&mut entries, &dest);
            entries.insert(dest, Entry::Dir(mode.unwrap_or(0o755)));
        } else if let Some(src) = &f.src {
            let p = image_dir.join(src);
            let canon = p
                .canonicalize()
                .with_context(|| format!("{at}: source {} not found", p.display()))?;
            if !canon.starts_with(&root) {
                bail!("{at}: source {} is outside the repository", p.display());
            }
            let meta = std::fs::symlink_metadata(&p)
                .with_context(|| format!("{at}: cannot stat {}", p.display()))?;
            let file_mode = |m: &std::fs::Metadata| {
                mode.unwrap_or(if m.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                })
            };
            if meta.is_dir() {
                if !dest.is_empty() {
                    add_parents(&mut entries, &dest);
                    entries.insert(dest.clone(), Entry::Dir(0o755));
                }
                for item in walkdir::WalkDir::new(&p).min_depth(1).sort_by_file_name() {
                    let item =
                        item.with_context(|| format!("{at}: cannot walk {}", p.display()))?;
                    let rel = item
                        .path()
                        .strip_prefix(&p)
                        .map_err(|e| anyhow!("{e}"))?
                        .to_str()
                        .ok_or_else(|| anyhow!("{at}: non UTF-8 path under {}", p.display()))?
                        .to_string();
                    let target = if dest.is_empty() {
                        rel
                    } else {
                        format!("{dest}/{rel}")
                    };
                    let m = item.path().symlink_metadata()?;
                    let e = if m.file_type().is_symlink() {
                        Entry::Symlink(
                            std::fs::read_link(item.path())?
                                .to_str()
                                .ok_or_else(|| anyhow!("{at}: non UTF-8 symlink"))?
                                .to_string(),
                        )
                    } else if m.is_dir() {
                        Entry::Dir(0o755)
                    } else {
                        Entry::File(file_mode(&m), item.path().to_path_buf())
                    };
                    entries.insert(target, e);
                }
            } else {
                if dest.is_empty() {
                    bail!("{at}: a file cannot be copied to /");
                }
                add_parents(&mut entries, &dest);
                entries.insert(dest, Entry::File(file_mode(&meta), p));
            }
        }
    }
    Ok(entries)
}

/// Builds one deterministic layer tar (uncompressed).
fn layer_tar(entries: &BTreeMap<String, Entry>, mtime: u64) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, e) in entries {
        use super::tarball::header;
        use tar::EntryType;
        match e {
            Entry::Dir(m) => {
                let mut h = header(EntryType::Directory, *m, 0, mtime)?;
                b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
            }
            Entry::File(m, src) => {
                let data =
                    std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
                let mut h = header(EntryType::Regular, *m, data.len() as u64, mtime)?;
                b.append_data(&mut h, path, &data[..])?;
            }
            Entry::Inline(m, data) => {
                let mut h = header(EntryType::Regular, *m, data.len() as u64, mtime)?;
                b.append_data(&mut h, path, &data[..])?;
            }
            Entry::Symlink(t) => {
                let mut h = header(EntryType::Symlink, 0o777, 0, mtime)?;
                b.append_link(&mut h, path, t)?;
            }
        }
    }
    Ok(b.into_inner()?)
}

/// Deterministic gzip (no name, mtime 0, level 6).
pub fn gzip_deterministic(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(data.len() / 2),
        flate2::Compression::new(6),
    );
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// RFC 3339 UTC time of a Unix timestamp.
pub fn rfc3339(secs: u64) -> String {
    crate::product::rfc3339_utc(secs)
}

fn oci_layer_type(mt: &str) -> String {
    match mt {
        super::manifest::DOCKER_LAYER_GZIP => OCI_LAYER_GZIP.to_string(),
        "application/vnd.docker.image.rootfs.diff.tar" => OCI_LAYER_TAR.to_string(),
        other => other.to_string(),
    }
}

/// Builds the local image in `dir` (its `image.yaml`), on top of `base` if the definition names
/// one (`resolve_base` returns it, already in the store). Every blob goes into `store`.
pub fn build(
    name: &str,
    dir: &Path,
    repo_root: &Path,
    store: &Store,
    epoch: u64,
    platform: &Platform,
    resolve_base: &dyn Fn(&str) -> Result<Resolved>,
) -> Result<Resolved> {
    let yaml = dir.join("image.yaml");
    let def = ImageDef::load(dir)?;
    let created = rfc3339(epoch);
    let (mut cfg, mut diff_ids, mut history, mut layers, mut arch) = (
        Map::new(),
        Vec::<Value>::new(),
        Vec::<Value>::new(),
        Vec::<Descriptor>::new(),
        (
            platform.os.clone(),
            platform.architecture.clone(),
            platform.variant.clone(),
        ),
    );
    if let Some(b) = &def.base {
        let base = resolve_base(b).with_context(|| format!("image {name:?}: base image {b:?}"))?;
        let inst = base
            .instances
            .first()
            .ok_or_else(|| anyhow!("base {b:?} has no image manifest"))?;
        let raw = store.read_blob(inst.config.hex()).with_context(|| {
            format!(
                "base {b:?}: config {} missing from the store",
                inst.config.digest
            )
        })?;
        let bc: Value =
            serde_json::from_slice(&raw).with_context(|| format!("base {b:?}: bad config JSON"))?;
        if let Some(c) = bc.get("config").and_then(Value::as_object) {
            cfg = c.clone();
        }
        diff_ids = bc
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        history = bc
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        arch = (
            bc.get("os")
                .and_then(Value::as_str)
                .unwrap_or(&platform.os)
                .to_string(),
            bc.get("architecture")
                .and_then(Value::as_str)
                .unwrap_or(&platform.architecture)
                .to_string(),
            bc.get("variant")
                .and_then(Value::as_str)
                .map(str::to_string),
        );
        layers = inst
            .layers
            .iter()
            .map(|l| Descriptor {
                media_type: oci_layer_type(&l.media_type),
                ..l.clone()
            })
            .collect();
    }
    for (i, layer) in def.layers.iter().enumerate() {
        let at = format!("{}: layer {}", yaml.display(), i + 1);
        let entries = collect_entries(dir, repo_root, layer, &at)?;
        let tar = layer_tar(&entries, epoch).with_context(|| at.clone())?;
        let diff = crate::fsutil::sha256_bytes(&tar);
        let (blob, mt) = if layer.uncompressed {
            (tar, OCI_LAYER_TAR)
        } else {
            (gzip_deterministic(&tar)?, OCI_LAYER_GZIP)
        };
        let hex = store.put_bytes(&blob)?;
        crate::testhook::kill_point("image-layer");
        layers.push(Descriptor {
            media_type: mt.to_string(),
            digest: format!("sha256:{hex}"),
            size: blob.len() as u64,
        });
        diff_ids.push(json!(format!("sha256:{diff}")));
        history.push(json!({
            "created": created,
            "created_by": format!("buildchain: {} layer {}{}", name, i + 1,
                layer.comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()),
        }));
    }
    let c = &def.config;
    if let Some(u) = &c.user {
        cfg.insert("User".into(), json!(u));
    }
    if !c.exposed_ports.is_empty() {
        let mut ports = cfg
            .get("ExposedPorts")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for p in &c.exposed_ports {
            ports.insert(p.clone(), json!({}));
        }
        cfg.insert("ExposedPorts".into(), Value::Object(ports));
    }
    if !c.env.is_empty() {
        let mut env: Vec<(String, String)> = cfg
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| {
                        let (k, v) = s.split_once('=').unwrap_or((s, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (k, v) in &c.env {
            match env.iter_mut().find(|(ek, _)| ek == k) {
                Some(e) => e.1 = v.clone(),
                None => env.push((k.clone(), v.clone())),
            }
        }
        cfg.insert(
            "Env".into(),
            json!(env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()),
        );
    }
    if let Some(e) = &c.entrypoint {
        cfg.insert("Entrypoint".into(), json!(e));
        if c.cmd.is_none() {
            cfg.remove("Cmd");
        }
    }
    if let Some(cmd) = &c.cmd {
        cfg.insert("Cmd".into(), json!(cmd));
    }
    if let Some(w) = &c.workdir {
        cfg.insert("WorkingDir".into(), json!(w));
    }
    if !c.labels.is_empty() {
        let mut labels = cfg
            .get("Labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, v) in &c.labels {
            labels.insert(k.clone(), json!(v));
        }
        let sorted: BTreeMap<String, Value> = labels.into_iter().collect();
        cfg.insert("Labels".into(), json!(sorted));
    }
    if let Some(s) = &c.stop_signal {
        cfg.insert("StopSignal".into(), json!(s));
    }
    let mut config = Map::new();
    config.insert("created".into(), json!(created));
    config.insert("architecture".into(), json!(arch.1));
    if let Some(v) = &arch.2 {
        config.insert("variant".into(), json!(v));
    }
    config.insert("os".into(), json!(arch.0));
    config.insert("config".into(), Value::Object(cfg));
    config.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
    config.insert("history".into(), Value::Array(history));
    let config_bytes = serde_json::to_vec(&Value::Object(config))?;
    let config_hex = store.put_bytes(&config_bytes)?;
    let config_desc = Descriptor {
        media_type: OCI_CONFIG.into(),
        digest: format!("sha256:{config_hex}"),
        size: config_bytes.len() as u64,
    };
    let desc_json =
        |d: &Descriptor| json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size});
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc_json(&config_desc),
        "layers": layers.iter().map(desc_json).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec_pretty(&manifest)?;
    let hex = store.put_bytes(&bytes)?;
    // Sanity: our own manifest parses.
    Manifest::parse(&bytes, None)?;
    let data = ImageData {
        hex: hex.clone(),
        bytes: bytes.clone(),
        config: config_desc,
        layers,
    };
    Ok(Resolved {
        top_hex: hex,
        top_bytes: bytes,
        media_type: OCI_MANIFEST.into(),
        instances: vec![data],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn gzip_is_deterministic() {
        let a = gzip_deterministic(b"hello").unwrap();
        assert_eq!(a, gzip_deterministic(b"hello").unwrap());
        assert_eq!(&a[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
    }
}
