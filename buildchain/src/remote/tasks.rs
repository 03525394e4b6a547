//! Task results in the remote cache (issue 13): the [`engine::ResultCache`] of buildchain.
//!
//! A record is a small OCI artifact manifest (`artifactType`
//! [`TASK_ARTIFACT_TYPE`], the empty config, one layer per output: its blob digest, size and
//! `org.opencontainers.image.title` = `build/<path>` under the build root or `repo/<path>` under
//! the repository), tagged `task-<key>`. Output blobs are pushed like any other cache blob, and
//! restored through the store's blob chain (verified), then copied to their paths (temp +
//! rename, 0644). A record is never trusted: a bad title, a missing blob or wrong bytes give a
//! warning and the task runs locally.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::artifact::{EMPTY_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use super::{Mode, RemoteCache};
use crate::engine::ResultCache;
use crate::fsutil::AtomicFile;
use crate::store::{is_sha256_hex, warn, Store};

/// `artifactType` of a task record.
pub const TASK_ARTIFACT_TYPE: &str = "application/vnd.buildchain.task.v1+json";
/// Media type of an output layer.
pub const OUTPUT_MEDIA_TYPE: &str = "application/octet-stream";
const TITLE: &str = "org.opencontainers.image.title";
/// Layer annotation: the output was a hard link of its store blob (image layouts), and is
/// restored as one (an ISO of the tree keeps sharing the extents of linked files).
const STORE_LINK: &str = "org.buildchain.store-link";

/// An output in a record: path, blob, size, restored as a store link.
type Output = (PathBuf, String, u64, bool);
/// An output being recorded: title, path, blob, size, is a store link.
type Layer = (String, PathBuf, String, u64, bool);

/// The result cache of one build: the process's remote cache, the roots output paths are
/// relative to, and the store blobs go through.
pub struct TaskCache {
    remote: Arc<RemoteCache>,
    build_root: PathBuf,
    repo_root: PathBuf,
    store_root: PathBuf,
}

/// The tag of the record of `key` (64 hex: 69 characters, under the 128 of a tag).
pub fn tag(key: &str) -> String {
    format!("task-{key}")
}

/// `rel` when it is a plain relative path (no `..`, no root, not empty).
fn plain(rel: &Path) -> Option<&Path> {
    let ok = rel.components().next().is_some()
        && rel.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then_some(rel)
}

impl TaskCache {
    /// A result cache on `remote` for a build with these roots.
    pub fn new(
        remote: Arc<RemoteCache>,
        build_root: &Path,
        repo_root: &Path,
        store_root: &Path,
    ) -> Self {
        TaskCache {
            remote,
            build_root: build_root.to_path_buf(),
            repo_root: repo_root.to_path_buf(),
            store_root: store_root.to_path_buf(),
        }
    }

    /// The layer title of an output path.
    fn title(&self, p: &Path) -> Result<String> {
        if let Some(r) = p.strip_prefix(&self.build_root).ok().and_then(plain) {
            return Ok(format!("build/{}", r.display()));
        }
        if let Some(r) = p.strip_prefix(&self.repo_root).ok().and_then(plain) {
            return Ok(format!("repo/{}", r.display()));
        }
        bail!(
            "output {} is outside the build root and the repository",
            p.display()
        )
    }

    /// The output path of a layer title (`None` for anything but `build/…` or `repo/…` with a
    /// plain relative path).
    fn path(&self, title: &str) -> Option<PathBuf> {
        let (root, rest) = if let Some(r) = title.strip_prefix("build/") {
            (&self.build_root, r)
        } else if let Some(r) = title.strip_prefix("repo/") {
            (&self.repo_root, r)
        } else {
            return None;
        };
        plain(Path::new(rest)).map(|r| root.join(r))
    }

    /// The outputs a record lists, or why it is rejected.
    fn parse(&self, body: &[u8]) -> Result<Vec<Output>> {
        let m: Value = serde_json::from_slice(body).context("not JSON")?;
        if m["mediaType"] != MANIFEST_MEDIA_TYPE || m["artifactType"] != TASK_ARTIFACT_TYPE {
            bail!("not a task record (mediaType/artifactType)");
        }
        let layers = m["layers"].as_array().ok_or_else(|| anyhow!("no layers"))?;
        let mut out = Vec::new();
        for l in layers {
            let digest = l["digest"].as_str().unwrap_or("");
            let hex = digest
                .strip_prefix("sha256:")
                .filter(|h| is_sha256_hex(h))
                .ok_or_else(|| anyhow!("bad layer digest {digest:?}"))?;
            let size = l["size"]
                .as_u64()
                .ok_or_else(|| anyhow!("layer {digest} without a size"))?;
            let title = l["annotations"][TITLE].as_str().unwrap_or("");
            let path = self
                .path(title)
                .ok_or_else(|| anyhow!("layer {digest}: bad title {title:?}"))?;
            let link = l["annotations"][STORE_LINK] == "true";
            out.push((path, hex.to_string(), size, link));
        }
        Ok(out)
    }

    fn try_restore(&self, task: &str, key: &str) -> Result<Option<Vec<(PathBuf, String)>>> {
        let client = &self.remote.client;
        let tag = tag(key);
        let body = match client.get_manifest_opt(&tag, MANIFEST_MEDIA_TYPE) {
            Ok(Some(b)) => b,
            Ok(None) => {
                self.remote
                    .stats
                    .task_misses
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => {
                self.remote.fail(&e);
                return Ok(None);
            }
        };
        let reject = |why: String| {
            self.remote
                .stats
                .task_rejected
                .fetch_add(1, Ordering::Relaxed);
            warn(&format!(
                "{}: task record {tag} of {task}: {why}; ignored, running the task",
                self.remote.name_text()
            ));
            Ok(None)
        };
        let outputs = match self.parse(&body) {
            Ok(o) => o,
            Err(e) => return reject(format!("{e:#}")),
        };
        let store = Store::shared(&self.store_root)?;
        for (path, hex, size, _) in &outputs {
            let what = format!("output {} of {task}", path.display());
            let got = store.fetch_chain(hex, Some(*size), &what, &mut || {
                bail!("not in the remote cache")
            });
            if let Err(e) = got {
                return reject(format!(
                    "output {} (sha256:{hex}) is missing or bad: {e:#}",
                    path.display()
                ));
            }
            if store.blob_len(hex)? != *size {
                return reject(format!(
                    "output {} (sha256:{hex}) has the wrong size",
                    path.display()
                ));
            }
        }
        let mut restored = Vec::new();
        for (path, hex, _, link) in &outputs {
            if *link {
                store.materialize(hex, path)?;
            } else {
                copy_verified(&store, hex, path)?;
            }
            restored.push((path.clone(), hex.clone()));
        }
        self.remote.stats.task_hits.fetch_add(1, Ordering::Relaxed);
        Ok(Some(restored))
    }

    /// The layers of every output, sorted by title; an error when an output cannot be recorded
    /// (not a regular file, outside the roots).
    fn layers(&self, outputs: &[(PathBuf, String)]) -> Result<Vec<Layer>> {
        let store = Store::shared(&self.store_root)?;
        let mut layers = Vec::new();
        for (path, sig) in outputs {
            if !is_sha256_hex(sig) {
                bail!("output {} is not a regular file", path.display());
            }
            let size = std::fs::metadata(path)
                .with_context(|| format!("cannot stat {}", path.display()))?
                .len();
            let link = store.is_link_of(path, sig);
            layers.push((self.title(path)?, path.clone(), sig.clone(), size, link));
        }
        layers.sort();
        Ok(layers)
    }

    fn try_record(&self, task: &str, key: &str, layers: &[Layer]) -> Result<()> {
        let client = &self.remote.client;
        for (_, path, hex, size, _) in layers {
            if client.head(hex)? == Some(*size) {
                continue;
            }
            let open = |off: u64, len: u64| -> Result<Box<dyn Read>> {
                let mut f =
                    File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
                f.seek(SeekFrom::Start(off))?;
                Ok(Box::new(f.take(len)))
            };
            client
                .push(hex, *size, None, &open)
                .with_context(|| format!("cannot push {} (sha256:{hex})", path.display()))?;
            self.remote
                .stats
                .pushed_bytes
                .fetch_add(*size, Ordering::Relaxed);
        }
        let empty = b"{}";
        let empty_hex = hex::encode(Sha256::digest(empty));
        if client.head(&empty_hex)? != Some(2) {
            let open = |_: u64, _: u64| -> Result<Box<dyn Read>> { Ok(Box::new(&empty[..])) };
            client.push(&empty_hex, 2, None, &open)?;
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": TASK_ARTIFACT_TYPE,
            "config": {
                "mediaType": EMPTY_MEDIA_TYPE,
                "digest": format!("sha256:{empty_hex}"),
                "size": 2,
                "data": "e30=",
            },
            "layers": layers.iter().map(|(title, _, hex, size, link)| {
                let mut annotations = json!({TITLE: title});
                if *link {
                    annotations[STORE_LINK] = json!("true");
                }
                json!({
                    "mediaType": OUTPUT_MEDIA_TYPE,
                    "digest": format!("sha256:{hex}"),
                    "size": size,
                    "annotations": annotations,
                })
            }).collect::<Vec<_>>(),
            "annotations": {"org.buildchain.task": task},
        });
        let body = serde_json::to_vec_pretty(&manifest)?;
        client.put_manifest(&tag(key), MANIFEST_MEDIA_TYPE, &body)?;
        self.remote
            .stats
            .task_records
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Copies stored blob `hex` to `dest` (temp + fsync + rename, mode 0644), checking the bytes
/// copied against `hex` once more.
fn copy_verified(store: &Store, hex: &str, dest: &Path) -> Result<()> {
    let mut src = store.open_blob(hex)?;
    let mut out = AtomicFile::create(dest)?;
    out.set_mode(0o644)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", dest.display()))?;
    }
    let got = hex::encode(h.finalize());
    if got != hex {
        bail!("stored blob sha256:{hex} reads as sha256:{got}");
    }
    out.commit()
}

impl ResultCache for TaskCache {
    fn restore(&self, task: &str, key: &str) -> Result<Option<Vec<(PathBuf, String)>>> {
        if self.remote.is_down() {
            return Ok(None);
        }
        self.try_restore(task, key)
    }

    fn record(&self, task: &str, key: &str, outputs: &[(PathBuf, String)]) -> Result<()> {
        if self.remote.mode() == Mode::Read || self.remote.is_down() {
            return Ok(());
        }
        // An output that cannot be recorded is the task's limit, not the cache's failure.
        let layers = match self.layers(outputs) {
            Ok(l) => l,
            Err(e) => {
                warn(&format!(
                    "{}: task {task} not recorded: {e:#}",
                    self.remote.name_text()
                ));
                return Ok(());
            }
        };
        if let Err(e) = self.try_record(task, key, &layers) {
            self.remote
                .fail(&e.context(format!("cannot record task {task} ({})", tag(key))));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> TaskCache {
        let cfg = super::super::Config {
            url: super::super::CacheUrl::parse("oci+http://127.0.0.1:1/c").unwrap(),
            mode: Mode::ReadWrite,
            ca: None,
        };
        TaskCache::new(
            Arc::new(RemoteCache::new(cfg).unwrap()),
            Path::new("/r/_build"),
            Path::new("/r"),
            Path::new("/store"),
        )
    }

    #[test]
    fn titles_map_to_paths_under_the_roots_only() {
        let c = cache();
        let p = Path::new("/r/_build/root/packages/x.rpm");
        assert_eq!(c.title(p).unwrap(), "build/root/packages/x.rpm");
        assert_eq!(c.path("build/root/packages/x.rpm").unwrap(), p);
        assert_eq!(
            c.title(Path::new("/r/dist/a.iso")).unwrap(),
            "repo/dist/a.iso"
        );
        assert_eq!(
            c.path("repo/dist/a.iso").unwrap(),
            Path::new("/r/dist/a.iso")
        );
        assert!(c.title(Path::new("/elsewhere/a")).is_err());
        for bad in [
            "build/../../etc/passwd",
            "repo//etc",
            "build/",
            "etc/x",
            "/r/x",
            "",
        ] {
            assert_eq!(c.path(bad), None, "{bad}");
        }
        assert_eq!(tag(&"a".repeat(64)).len(), 69);
    }

    #[test]
    fn records_of_another_type_or_with_bad_layers_are_rejected() {
        let c = cache();
        let ok = json!({"mediaType": MANIFEST_MEDIA_TYPE, "artifactType": TASK_ARTIFACT_TYPE,
            "layers": [{"digest": format!("sha256:{}", "0".repeat(64)), "size": 3,
                        "annotations": {TITLE: "build/a"}}]});
        let got = c.parse(&serde_json::to_vec(&ok).unwrap()).unwrap();
        assert_eq!(
            got,
            vec![(PathBuf::from("/r/_build/a"), "0".repeat(64), 3, false)]
        );
        let mut other = ok.clone();
        other["artifactType"] = json!("application/vnd.buildchain.iso.v1");
        assert_eq!(
            c.parse(&serde_json::to_vec(&other).unwrap())
                .unwrap_err()
                .to_string(),
            "not a task record (mediaType/artifactType)"
        );
        let mut escape = ok.clone();
        escape["layers"][0]["annotations"][TITLE] = json!("build/../x");
        assert_eq!(
            c.parse(&serde_json::to_vec(&escape).unwrap())
                .unwrap_err()
                .to_string(),
            format!("layer sha256:{}: bad title \"build/../x\"", "0".repeat(64))
        );
        let mut digest = ok;
        digest["layers"][0]["digest"] = json!("sha256:xyz");
        assert_eq!(
            c.parse(&serde_json::to_vec(&digest).unwrap())
                .unwrap_err()
                .to_string(),
            "bad layer digest \"sha256:xyz\""
        );
    }
}
