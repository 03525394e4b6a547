//! Synthetic `images/` trees (skopeo `dir:` layout with small fake blobs) for benchmarks and
//! generator tests. Blobs are not real tars: the generator and nginx never look inside them.

use std::path::Path;

use anyhow::{Context, Result};

use super::manifest::{DOCKER_MANIFEST, OCI_MANIFEST};
use super::tree::sha256_hex;

fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes one image tag directory `<root>/<name>/<tag>/` holding `manifest.json` (of
/// `media_type`: Docker v2s2 or OCI), `version`, the config and the given layers. Returns the
/// sha256 hex of the manifest.
pub fn write_image(
    root: &Path,
    name: &str,
    tag: &str,
    media_type: &str,
    config: &[u8],
    layers: &[Vec<u8>],
) -> Result<String> {
    let dir = root.join(name).join(tag);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (cfg_mt, layer_mt) = if media_type == OCI_MANIFEST {
        (
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    } else {
        (
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    };
    let desc = |mt: &str, b: &[u8]| {
        format!(
            r#"{{"mediaType":"{mt}","size":{},"digest":"sha256:{}"}}"#,
            b.len(),
            sha256_hex(b)
        )
    };
    let layer_descs: Vec<String> = layers.iter().map(|l| desc(layer_mt, l)).collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{},"layers":[{}]}}"#,
        desc(cfg_mt, config),
        layer_descs.join(",")
    );
    for b in std::iter::once(config).chain(layers.iter().map(Vec::as_slice)) {
        let p = dir.join(sha256_hex(b));
        std::fs::write(&p, b).with_context(|| format!("cannot write {}", p.display()))?;
    }
    std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n")
        .context("cannot write version")?;
    std::fs::write(dir.join("manifest.json"), &manifest).context("cannot write manifest")?;
    Ok(sha256_hex(manifest.as_bytes()))
}

/// Writes `images` images × `tags` tags under `root`: names `group<i % 10>/image<i>` for every
/// third image (names with `/`), else `image<i>`; even images Docker v2s2, odd images OCI; every
/// manifest has a layer shared by all images, one shared by the tags of the image and one of its
/// own (`layer_size` bytes each). With `classic_compatible`, names are all flat and manifests all
/// v2s2 (what the classic Python generator understands).
pub fn write_tree(
    root: &Path,
    images: usize,
    tags: usize,
    layer_size: usize,
    classic_compatible: bool,
) -> Result<()> {
    let shared = blob(1, layer_size);
    for i in 0..images {
        let name = if i % 3 == 0 && !classic_compatible {
            format!("group{}/image{i}", i % 10)
        } else {
            format!("image{i}")
        };
        let mt = if i % 2 == 0 {
            DOCKER_MANIFEST
        } else {
            OCI_MANIFEST
        };
        let per_image = blob(1000 + i as u64, layer_size);
        for t in 0..tags {
            let own = blob(1_000_000 + (i * 1000 + t) as u64, layer_size);
            let config =
                format!(r#"{{"architecture":"amd64","os":"linux","image":{i},"tag":{t}}}"#);
            write_image(
                root,
                &name,
                &format!("1.{t}.0"),
                mt,
                config.as_bytes(),
                &[shared.clone(), per_image.clone(), own],
            )?;
        }
    }
    Ok(())
}
