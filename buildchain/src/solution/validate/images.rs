//! The OCI image layouts under `images/`: indexes, manifests and blobs.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::{valid_image_name, valid_tag, Ctx, Report, Sol};
use crate::solution::tree::{Kind, TreeEntry};

/// Checks every image directory; returns name → tags found.
pub(super) fn check_images(
    cx: &mut Ctx,
    sol: &Sol,
    rep: &mut Report,
) -> BTreeMap<String, BTreeSet<String>> {
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
