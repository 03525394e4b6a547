//! The operator: role, CRDs, the images its manifests name, the registry configuration.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{yaml_docs, Ctx, Report};
use crate::solution::tree::{Kind, TreeEntry};

/// Completeness of the operator manifests: every `image:` they reference is on the Solution
/// (see [`crate::trust::completeness`] for what is recognised).
pub(super) fn check_operator_images(
    cx: &mut Ctx,
    found: &BTreeMap<String, BTreeSet<String>>,
    rep: &mut Report,
) {
    let mut served = crate::trust::completeness::Served::default();
    for (n, tags) in found {
        for t in tags {
            served.add(n, t);
        }
    }
    let files: Vec<TreeEntry> = cx
        .index
        .by_path
        .values()
        .filter(|e| e.kind == Kind::File && e.path.starts_with("operator/"))
        .filter(|e| crate::trust::completeness::is_scanned(&e.path))
        .cloned()
        .collect();
    for e in files {
        let Ok(bytes) = cx.read_small(&e) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for d in crate::trust::completeness::check_images(
            [(e.path.as_str(), text.as_ref())],
            &served,
            "the Solution's images/",
        ) {
            rep.error(d.code, &d.path, d.to_string());
        }
    }
}

pub(super) fn check_operator(cx: &mut Ctx, rep: &mut Report) {
    let rp = "operator/deploy/role.yaml";
    match cx.index.file(rp).cloned() {
        None => rep.error("ROLE_MISSING", rp, "no operator/deploy/role.yaml"),
        Some(e) => match cx.read_small(&e).and_then(|b| yaml_docs(&b)) {
            Err(x) => rep.error("ROLE_INVALID", rp, format!("not valid YAML: {x}")),
            Ok(docs) => {
                if docs.is_empty() {
                    rep.warn("ROLE_EMPTY", rp, "role.yaml holds no document");
                }
                for (i, d) in docs.iter().enumerate() {
                    let kind = d.get("kind").and_then(Value::as_str);
                    if !matches!(kind, Some("Role") | Some("ClusterRole")) {
                        rep.error(
                            "ROLE_FORBIDDEN_KIND",
                            rp,
                            format!("document {} is of kind {kind:?}: only Role and ClusterRole are allowed", i + 1),
                        );
                    } else if !d
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .is_some_and(|a| a.starts_with("rbac.authorization.k8s.io/"))
                    {
                        rep.error(
                            "ROLE_INVALID",
                            rp,
                            format!(
                                "document {} has no rbac.authorization.k8s.io apiVersion",
                                i + 1
                            ),
                        );
                    }
                }
            }
        },
    }
    let dir = "operator/deploy/crds";
    let files: Vec<TreeEntry> = cx.index.children(dir).cloned().collect();
    let mut crds = 0;
    for f in files {
        if !f.path.ends_with("_crd.yaml") {
            if f.kind != Kind::Dir {
                rep.warn(
                    "CRD_IGNORED_FILE",
                    &f.path,
                    "not named *_crd.yaml: MetalK8s ignores it",
                );
            }
            continue;
        }
        crds += 1;
        let Some(e) = cx.index.file(&f.path).cloned() else {
            rep.error("CRD_INVALID", &f.path, "not a regular file");
            continue;
        };
        match cx.read_small(&e).and_then(|b| yaml_docs(&b)) {
            Err(x) => rep.error("CRD_INVALID", &f.path, format!("not valid YAML: {x}")),
            Ok(docs) => {
                if docs.is_empty() {
                    rep.error("CRD_INVALID", &f.path, "no document");
                }
                for (i, d) in docs.iter().enumerate() {
                    let kind = d.get("kind").and_then(Value::as_str);
                    let api = d.get("apiVersion").and_then(Value::as_str);
                    if kind != Some("CustomResourceDefinition")
                        || !api.is_some_and(|a| a.starts_with("apiextensions.k8s.io/"))
                    {
                        rep.error(
                            "CRD_NOT_A_CRD",
                            &f.path,
                            format!("document {} is {api:?}/{kind:?}, not an apiextensions.k8s.io CustomResourceDefinition", i + 1),
                        );
                    }
                }
            }
        }
    }
    if crds == 0 {
        rep.warn("CRD_NONE", dir, "no operator/deploy/crds/*_crd.yaml");
    }
}

pub(super) fn check_registry_config(
    cx: &mut Ctx,
    found: &BTreeMap<String, BTreeSet<String>>,
    rep: &mut Report,
) {
    let p = "registry-config.inc.j2";
    let Some(e) = cx.index.file(p).cloned() else {
        rep.error(
            "REGISTRY_CONFIG_MISSING",
            p,
            "no registry-config.inc.j2 at the root",
        );
        return;
    };
    let text = match cx.read_small(&e) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(x) => {
            rep.error("REGISTRY_CONFIG_MISSING", p, x);
            return;
        }
    };
    if !text.contains("{{ repository }}") || !text.contains("{{ registry_root }}") {
        rep.error(
            "REGISTRY_CONFIG_PLACEHOLDERS",
            p,
            "the include must use the {{ repository }} and {{ registry_root }} placeholders",
        );
    }
    for (n, tags) in found {
        for t in tags {
            let loc = format!("/v2/{{{{ repository }}}}/{n}/manifests/{t}\"");
            if !text.contains(&loc) {
                rep.error(
                    "REGISTRY_CONFIG_INCOMPLETE",
                    p,
                    format!("no location serves {n}:{t} (expected {loc})"),
                );
            }
        }
    }
}
