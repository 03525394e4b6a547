//! `manifest.yaml` checks: apiVersion, kind, name, version, display name, image list, volume ID.

use serde_json::Value;

use super::{
    is_dns1123_label, is_semver, valid_image_name, valid_tag, yaml_docs, Ctx, Report, Sol,
    ANNOTATION_DISPLAY_NAME, API_VERSION,
};

pub(super) fn check_manifest(cx: &mut Ctx, volume_id: Option<&str>, rep: &mut Report) -> Sol {
    let mut sol = Sol::default();
    let p = "manifest.yaml";
    let Some(e) = cx.index.file(p).cloned() else {
        rep.error(
            "MANIFEST_MISSING",
            p,
            "no manifest.yaml at the root of the Solution",
        );
        return sol;
    };
    let bytes = match cx.read_small(&e) {
        Ok(b) => b,
        Err(x) => {
            rep.error("MANIFEST_UNREADABLE", p, x);
            return sol;
        }
    };
    let docs = match yaml_docs(&bytes) {
        Ok(d) => d,
        Err(x) => {
            rep.error("MANIFEST_INVALID", p, format!("not valid YAML: {x}"));
            return sol;
        }
    };
    if docs.len() != 1 {
        rep.error(
            "MANIFEST_INVALID",
            p,
            format!("expected one YAML document, found {}", docs.len()),
        );
        return sol;
    }
    let m = &docs[0];
    if !m.is_object() {
        rep.error("MANIFEST_INVALID", p, "the manifest is not a mapping");
        return sol;
    }
    match m.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        other => rep.error(
            "MANIFEST_API_VERSION",
            p,
            format!("apiVersion is {other:?}, expected {API_VERSION:?}"),
        ),
    }
    match m.get("kind").and_then(Value::as_str) {
        Some("Solution") => {}
        other => rep.error(
            "MANIFEST_KIND",
            p,
            format!("kind is {other:?}, expected \"Solution\""),
        ),
    }
    match m.pointer("/metadata/name") {
        None | Some(Value::Null) => {
            rep.error("MANIFEST_NAME_MISSING", p, "metadata.name is missing")
        }
        Some(Value::String(n)) => {
            if !is_dns1123_label(n) {
                rep.error(
                    "MANIFEST_NAME_INVALID",
                    p,
                    format!("metadata.name {n:?} is not a DNS-1123 label of at most 63 characters"),
                );
            }
            sol.name = Some(n.clone());
        }
        Some(v) => rep.error(
            "MANIFEST_NAME_INVALID",
            p,
            format!("metadata.name {v} is not a string"),
        ),
    }
    sol.display = m
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION_DISPLAY_NAME))
        .and_then(Value::as_str)
        .map(str::to_string);
    if sol.display.is_none() {
        rep.warn(
            "MANIFEST_DISPLAY_NAME_MISSING",
            p,
            format!("no {ANNOTATION_DISPLAY_NAME} annotation"),
        );
    }
    match m.pointer("/spec/version") {
        None | Some(Value::Null) => {
            rep.error("MANIFEST_VERSION_MISSING", p, "spec.version is missing")
        }
        Some(Value::String(v)) => {
            if !is_semver(v) {
                rep.error(
                    "MANIFEST_VERSION_INVALID",
                    p,
                    format!("spec.version {v:?} is not a MAJOR.MINOR.PATCH[-pre][+build] version"),
                );
            }
            sol.version = Some(v.clone());
        }
        Some(v) => rep.error(
            "MANIFEST_VERSION_INVALID",
            p,
            format!("spec.version {v} is not a string (quote it)"),
        ),
    }
    // Operator image (MetalK8s defaults it to <name>-operator:<version>).
    match m.pointer("/spec/operator/image") {
        None | Some(Value::Null) => {
            if let (Some(n), Some(v)) = (&sol.name, &sol.version) {
                rep.warn(
                    "OPERATOR_IMAGE_DEFAULTED",
                    p,
                    format!("spec.operator.image is missing: MetalK8s uses {n}-operator:{v}"),
                );
                sol.operator = Some((format!("{n}-operator"), v.clone()));
            }
        }
        Some(img) => {
            let n = img.get("name").and_then(Value::as_str);
            let t = img.get("tag").and_then(Value::as_str);
            match (n, t) {
                (Some(n), Some(t)) if valid_image_name(n) && valid_tag(t) => {
                    sol.operator = Some((n.to_string(), t.to_string()))
                }
                _ => rep.error(
                    "MANIFEST_OPERATOR_INVALID",
                    p,
                    format!("spec.operator.image must be {{name, tag}} with a valid name and tag, found {img}"),
                ),
            }
        }
    }
    match m.pointer("/spec/images") {
        None | Some(Value::Null) => rep.warn(
            "MANIFEST_IMAGES_MISSING",
            p,
            "spec.images is missing: MetalK8s uses every images/<name>/<tag> directory",
        ),
        Some(Value::Array(list)) => {
            let mut v = Vec::new();
            let mut raw = Vec::new();
            for i in list {
                let s = i.as_str().unwrap_or_default();
                match s.rsplit_once(':') {
                    Some((n, t)) if valid_image_name(n) && valid_tag(t) => {
                        v.push((n.to_string(), t.to_string()));
                        raw.push(s.to_string());
                    }
                    _ => rep.error(
                        "MANIFEST_IMAGE_INVALID",
                        p,
                        format!("spec.images entry {i} is not a \"name:tag\" string"),
                    ),
                }
            }
            let mut sorted = raw.clone();
            sorted.sort();
            if sorted != raw {
                rep.warn("MANIFEST_IMAGES_UNSORTED", p, "spec.images is not sorted");
            }
            sorted.dedup();
            if sorted.len() != raw.len() {
                rep.warn(
                    "MANIFEST_IMAGES_DUPLICATE",
                    p,
                    "spec.images lists an image twice",
                );
            }
            sol.images = Some(v);
        }
        Some(x) => rep.error(
            "MANIFEST_INVALID",
            p,
            format!("spec.images is not a list: {x}"),
        ),
    }
    // Version consistency: volume id, operator tag.
    if let (Some(vol), Some(ver)) = (volume_id, &sol.version) {
        let last = vol.rsplit(' ').next().unwrap_or_default();
        if last.starts_with(|c: char| c.is_ascii_digit()) {
            if last != ver {
                rep.error(
                    "VERSION_MISMATCH",
                    p,
                    format!("spec.version is {ver:?} but the volume id {vol:?} says {last:?}"),
                );
            } else if let Some(d) = &sol.display {
                let want = format!("{d} {ver}");
                if vol != want && !want.starts_with(vol) {
                    rep.warn(
                        "VOLUME_ID_UNEXPECTED",
                        "",
                        format!("volume id is {vol:?}, expected {want:?}"),
                    );
                }
            }
        } else {
            rep.warn(
                "VOLUME_ID_UNEXPECTED",
                "",
                format!("volume id {vol:?} does not end with the version {ver:?}"),
            );
        }
    }
    if let (Some((on, ot)), Some(ver)) = (&sol.operator, &sol.version) {
        if ot != ver {
            rep.warn(
                "OPERATOR_TAG_VERSION_MISMATCH",
                p,
                format!("operator image {on}:{ot} is not tagged with spec.version {ver:?}"),
            );
        }
    }
    sol
}
