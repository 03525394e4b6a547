//! The OCI image layouts of the medium against the index.

use std::collections::BTreeMap;

use crate::registry_config::manifest;
use crate::solution::validate::Report;
use crate::trust::contents::ContentIndex;

use super::Medium;

pub(super) fn check_images(m: &Medium, index: Option<&ContentIndex>, rep: &mut Report) {
    let mut found: BTreeMap<(String, String), crate::trust::contents::ImageEntry> = BTreeMap::new();
    for f in &m.files {
        let Some(d) = f
            .path
            .strip_prefix("images/")
            .and_then(|d| d.strip_suffix("/manifest.json"))
        else {
            continue;
        };
        let Some((name, tag)) = d.rsplit_once('/') else {
            continue;
        };
        let dir = format!("images/{d}");
        let Some(bytes) = m.captured(&f.path) else {
            rep.error("IMAGE_MANIFEST_INVALID", &f.path, "too large or unreadable");
            continue;
        };
        let mut refs: Vec<(String, manifest::Descriptor)> = Vec::new();
        let entry = crate::trust::index_reader::image_entry(name, tag, bytes, |file| {
            // Child manifests are captured; config blobs are only needed for platforms.
            // An absent child manifest fails the entry (reported as a missing child below).
            match m.captured(&format!("{dir}/{file}")) {
                Some(b) => Ok(Some(b.to_vec())),
                None if file.ends_with(".manifest.json") => {
                    Err(anyhow::anyhow!("{dir}/{file} is absent"))
                }
                None => Ok(None),
            }
        });
        let parsed = match manifest::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                rep.error("IMAGE_MANIFEST_INVALID", &f.path, format!("{e:#}"));
                continue;
            }
        };
        rep.stats.images += 1;
        let mut list = vec![parsed];
        if list[0].is_index() {
            for c in list[0].children.clone() {
                let cp = format!("{dir}/{}.manifest.json", c.hex);
                match m.facts.get(&cp) {
                    None => rep.error(
                        "CHILD_MANIFEST_MISSING",
                        &cp,
                        format!("child manifest sha256:{} of the index is absent", c.hex),
                    ),
                    Some(cf) if cf.sha256 != c.hex || cf.len != c.size => rep.error(
                        "CHILD_MANIFEST_DIGEST_MISMATCH",
                        &cp,
                        format!(
                            "content is sha256:{} ({} bytes), the index says sha256:{} ({} bytes)",
                            cf.sha256, cf.len, c.hex, c.size
                        ),
                    ),
                    Some(cf) => match cf.captured.as_deref().map(manifest::parse) {
                        Some(Ok(cm)) => list.push(cm),
                        _ => rep.error("IMAGE_MANIFEST_INVALID", &cp, "unreadable child manifest"),
                    },
                }
            }
        }
        for mm in &list {
            for b in &mm.blobs {
                refs.push((format!("{dir}/{}", b.hex), b.clone()));
            }
        }
        for (bp, d) in refs {
            rep.stats.blob_refs += 1;
            match m.facts.get(&bp) {
                None if d.foreign => rep.warn(
                    "FOREIGN_BLOB_ABSENT",
                    &bp,
                    format!("foreign layer sha256:{} is not on the medium", d.hex),
                ),
                None => rep.error(
                    "BLOB_MISSING",
                    &bp,
                    format!("blob sha256:{} is absent", d.hex),
                ),
                Some(b) if b.error.is_some() => {}
                Some(b) if b.len != d.size => rep.error(
                    "BLOB_SIZE_MISMATCH",
                    &bp,
                    format!("blob is {} bytes, its manifest says {}", b.len, d.size),
                ),
                Some(b) if b.sha256 != d.hex => rep.error(
                    "BLOB_DIGEST_MISMATCH",
                    &bp,
                    format!("content has sha256:{}, expected sha256:{}", b.sha256, d.hex),
                ),
                Some(_) => {}
            }
        }
        if let Ok(e) = entry {
            found.insert((name.to_string(), tag.to_string()), e);
        }
    }
    let Some(index) = index else {
        return;
    };
    let indexed: BTreeMap<(String, String), &crate::trust::contents::ImageEntry> = index
        .images
        .iter()
        .map(|i| ((i.name.clone(), i.tag.clone()), i))
        .collect();
    for ((n, t), e) in &found {
        let p = format!("images/{n}/{t}");
        match indexed.get(&(n.clone(), t.clone())) {
            None => rep.error(
                "IMAGE_NOT_INDEXED",
                &p,
                format!("{n}:{t} is not in the index"),
            ),
            Some(i) if i.digest != e.digest => rep.error(
                "IMAGE_DIGEST_MISMATCH",
                &p,
                format!("manifest is {}, the index says {}", e.digest, i.digest),
            ),
            Some(i) if i.blobs != e.blobs || i.media_type != e.media_type => rep.error(
                "IMAGE_INDEX_MISMATCH",
                &p,
                format!("{n}:{t}: the index lists other blobs or media type than the manifest"),
            ),
            Some(_) => {}
        }
    }
    for (n, t) in indexed.keys() {
        if !found.contains_key(&(n.clone(), t.clone())) {
            rep.error(
                "IMAGE_MISSING",
                &format!("images/{n}/{t}"),
                format!("{n}:{t} is in the index but not on the medium"),
            );
        }
    }
}
