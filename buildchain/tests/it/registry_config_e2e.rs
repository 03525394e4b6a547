//! End-to-end: a tree made by real `skopeo` (OCI and v2s2 manifests, multi-tag, an OCI index and
//! a Docker manifest list, layers shared across images and stored once), the generated include
//! served by real `nginx` on 127.0.0.1, then pulled back with `skopeo` (`list-tags`, `inspect`,
//! `copy` by tag and by digest to `dir:` and `oci:`): byte-identical content, verified digests,
//! registry JSON errors, HEAD with digest headers. The same again over the tree mastered into an
//! ISO and extracted from it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use buildchain::registry_config::{generate, tree::sha256_hex, Constants, Options};
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

// ---------------------------------------------------------------------------------------------
// Hand-made OCI layout (deterministic tar + gzip), then converted with real skopeo.

struct Layout {
    dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
        }
    }
    fn put(&self, media_type: &str, bytes: &[u8]) -> Value {
        let h = sha256_hex(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(&h), bytes).unwrap();
        json!({"mediaType": media_type, "digest": format!("sha256:{h}"), "size": bytes.len()})
    }
    /// A gzip layer holding one file; returns (descriptor, diff_id).
    fn layer(&self, path: &str, content: &[u8]) -> (Value, String) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        tar.append_data(&mut h, path, content).unwrap();
        let raw = tar.into_inner().unwrap();
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).unwrap();
        let gz = gz.finish().unwrap();
        (
            self.put("application/vnd.oci.image.layer.v1.tar+gzip", &gz),
            format!("sha256:{}", sha256_hex(&raw)),
        )
    }
    fn image(&self, arch: &str, layers: &[&(Value, String)], with_media_type: bool) -> Value {
        let config = json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>()},
        });
        let cfg = self.put(
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let mut m = json!({
            "schemaVersion": 2,
            "config": cfg,
            "layers": layers.iter().map(|l| l.0.clone()).collect::<Vec<_>>(),
        });
        if with_media_type {
            m["mediaType"] = json!(OCI_MANIFEST);
        }
        let mut d = self.put(OCI_MANIFEST, m.to_string().as_bytes());
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        d
    }
    fn index(&self, children: &[Value]) -> Value {
        let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children});
        self.put(OCI_INDEX, idx.to_string().as_bytes())
    }
    fn tag(&mut self, name: &str, desc: &Value) {
        let mut d = desc.clone();
        d.as_object_mut().unwrap().remove("platform");
        d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        self.refs.push(d);
    }
    fn finish(&self) {
        std::fs::write(
            self.dir.join("index.json"),
            json!({"schemaVersion": 2, "manifests": self.refs}).to_string(),
        )
        .unwrap();
        std::fs::write(
            self.dir.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
    }
}

fn skopeo() -> Command {
    let mut c = Command::new(testkit::require_tool("skopeo"));
    c.arg("--insecure-policy");
    c
}

/// One image tag of the fixture.
#[derive(Clone, Debug)]
struct Img {
    name: &'static str,
    tag: &'static str,
    /// The directory skopeo wrote (what a pull must reproduce).
    pristine: PathBuf,
    /// Media type of manifest.json.
    media_type: &'static str,
}

impl Img {
    fn manifest(&self) -> Vec<u8> {
        std::fs::read(self.pristine.join("manifest.json")).unwrap()
    }
    fn digest(&self) -> String {
        sha256_hex(&self.manifest())
    }
    fn is_index(&self) -> bool {
        matches!(self.media_type, OCI_INDEX | DOCKER_LIST)
    }
}

/// Builds the fixture: pristine skopeo `dir:` copies under `<tmp>/pristine`, and the served tree
/// `<tmp>/images` derived from them with deduplication applied (a shared layer removed from
/// `tools/kubectl`, stored only under `base/1.0`) and one manifest-list child stored as a plain
/// `<hex>` file instead of `<hex>.manifest.json`.
fn build_fixture(tmp: &Path) -> (PathBuf, Vec<Img>) {
    let mut lay = Layout::new(&tmp.join("layout"));
    let base = lay.layer("etc/os-release", b"ID=fixture\n");
    let extra = lay.layer("usr/bin/extra", b"extra tool\n");
    let kubectl = lay.layer("usr/bin/kubectl", b"#!/bin/sh\necho kubectl\n");
    let amd = lay.layer("arch", b"amd64\n");
    let arm = lay.layer("arch", b"arm64\n");
    let bare = lay.layer("bare", b"no media type field\n");
    let b10 = lay.image("amd64", &[&base], true);
    lay.tag("base-1.0", &b10);
    let b11 = lay.image("amd64", &[&base, &extra], true);
    lay.tag("base-1.1", &b11);
    let k = lay.image("amd64", &[&base, &kubectl], true);
    lay.tag("kubectl", &k);
    let ma = lay.image("amd64", &[&base, &amd], true);
    let mr = lay.image("arm64", &[&base, &arm], true);
    let idx = lay.index(&[ma, mr]);
    lay.tag("multi", &idx);
    let bm = lay.image("amd64", &[&bare], false);
    lay.tag("bare", &bm);
    lay.finish();

    let pristine = tmp.join("pristine");
    let src = |r: &str| format!("oci:{}:{r}", lay.dir.display());
    let mut imgs = Vec::new();
    let mut copy = |r: &str, name: &'static str, tag: &'static str, extra: &[&str], mt| {
        let dest = pristine.join(name).join(tag);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        testkit::run_ok(
            skopeo()
                .arg("copy")
                .arg("-q")
                .args(extra)
                .arg(src(r))
                .arg(format!("dir:{}", dest.display())),
        );
        imgs.push(Img {
            name,
            tag,
            pristine: dest,
            media_type: mt,
        });
    };
    copy("base-1.0", "base", "1.0", &[], OCI_MANIFEST);
    copy("base-1.0", "base", "latest", &[], OCI_MANIFEST);
    copy("base-1.1", "base", "1.1", &[], OCI_MANIFEST);
    copy(
        "kubectl",
        "tools/kubectl",
        "1.28.0",
        &["--format", "v2s2"],
        DOCKER_MANIFEST,
    );
    copy("multi", "multi", "2.0", &["--all"], OCI_INDEX);
    copy(
        "multi",
        "multi-list",
        "2.0",
        &["--all", "--format", "v2s2"],
        DOCKER_LIST,
    );
    copy("bare", "bare", "1", &[], OCI_MANIFEST);

    // Sanity: skopeo kept what we asked for.
    for img in &imgs {
        let v: Value = serde_json::from_slice(&img.manifest()).unwrap();
        let mt = v["mediaType"].as_str().unwrap_or(OCI_MANIFEST);
        assert_eq!(mt, img.media_type, "{}:{}", img.name, img.tag);
    }
    let bare_manifest: Value = serde_json::from_slice(&imgs[6].manifest()).unwrap();
    assert!(bare_manifest.get("mediaType").is_none());

    // The served tree.
    let images = tmp.join("images");
    testkit::run_ok(Command::new("cp").arg("-a").arg(&pristine).arg(&images));
    let base_hex = base.0["digest"].as_str().unwrap()[7..].to_string();
    let kube_dir = images.join("tools/kubectl/1.28.0");
    std::fs::remove_file(kube_dir.join(&base_hex)).unwrap();
    assert!(images.join("base/1.0").join(&base_hex).exists());
    let list_dir = images.join("multi-list/2.0");
    let child = std::fs::read_dir(&list_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".manifest.json"))
        .min()
        .unwrap();
    std::fs::rename(
        list_dir.join(&child),
        list_dir.join(child.trim_end_matches(".manifest.json")),
    )
    .unwrap();
    (images, imgs)
}

/// Masters `dir` into an ISO with our own writer (`buildchain iso master`) and extracts it with
/// libarchive's `bsdtar`: the returned tree is what ships.
fn iso_roundtrip(dir: &Path) -> PathBuf {
    // What ships is what is tested: master with our own writer (`buildchain iso master`), then
    // extract with an independent reader (libarchive's bsdtar, which uses Rock Ridge).
    let bsdtar = testkit::require_tool("bsdtar");
    let parent = dir.parent().unwrap();
    let iso = parent.join("roundtrip.iso");
    let out = parent.join("from-iso");
    testkit::run_ok(
        Command::new(env!("CARGO_BIN_EXE_buildchain"))
            .args(["iso", "master"])
            .arg(dir)
            .arg("-o")
            .arg(&iso)
            .args(["--volid", "REGISTRY TEST", "--md5"]),
    );
    std::fs::create_dir_all(&out).unwrap();
    testkit::run_ok(
        Command::new(&bsdtar)
            .arg("-xf")
            .arg(&iso)
            .arg("-C")
            .arg(&out),
    );
    // Extracted directories may be read-only (ISO modes); make the temp dir removable.
    testkit::run_ok(Command::new("chmod").arg("-R").arg("u+w").arg(&out));
    out
}

// ---------------------------------------------------------------------------------------------
// Checks.

fn dir_files(d: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn assert_same_dir(got: &Path, want: &Path) {
    let g = dir_files(got);
    let w = dir_files(want);
    assert_eq!(
        g.keys().collect::<Vec<_>>(),
        w.keys().collect::<Vec<_>>(),
        "{} vs {}",
        got.display(),
        want.display()
    );
    for (k, v) in &w {
        assert!(
            g[k] == *v,
            "{k} differs between {} and {}",
            got.display(),
            want.display()
        );
    }
}

/// Every blob of an `oci:` layout hashes to its name; returns the set of blob hexes.
fn verified_oci_blobs(layout: &Path) -> std::collections::BTreeSet<String> {
    let mut set = std::collections::BTreeSet::new();
    for (name, bytes) in dir_files(&layout.join("blobs/sha256")) {
        assert_eq!(
            sha256_hex(&bytes),
            name,
            "corrupt blob in {}",
            layout.display()
        );
        set.insert(name);
    }
    set
}

/// Layer and config digests referenced by the pristine copy (children included).
fn referenced_blobs(img: &Img) -> Vec<String> {
    let mut out = Vec::new();
    for (name, bytes) in dir_files(&img.pristine) {
        if name == "manifest.json" || name.ends_with(".manifest.json") {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            if let Some(layers) = v["layers"].as_array() {
                for l in layers {
                    out.push(l["digest"].as_str().unwrap()[7..].to_string());
                }
            }
        }
    }
    out
}

fn header<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn assert_registry_error(port: u16, path: &str, code: &str) {
    for method in ["GET", "HEAD"] {
        let (status, h, body) = testkit::http_request(port, method, path, &[]);
        assert_eq!(status, 404, "{method} {path}");
        assert_eq!(
            header(&h, "content-type"),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(
            header(&h, "docker-distribution-api-version"),
            Some("registry/2.0"),
            "{method} {path}"
        );
        if method == "GET" {
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["errors"][0]["code"], code, "{path}: {v}");
        }
    }
}

/// A read-only registry's answer to a push or other write: 405, JSON `UNSUPPORTED`, API
/// version and `Allow: GET, HEAD` headers.
fn assert_unsupported(port: u16, method: &str, path: &str) {
    let (status, h, body) = testkit::http_request(port, method, path, &[]);
    assert_eq!(status, 405, "{method} {path}");
    assert_eq!(
        header(&h, "content-type"),
        Some("application/json"),
        "{method} {path}"
    );
    assert_eq!(
        header(&h, "docker-distribution-api-version"),
        Some("registry/2.0"),
        "{method} {path}"
    );
    assert_eq!(header(&h, "allow"), Some("GET, HEAD"), "{method} {path}");
    let v: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&body)));
    assert_eq!(
        v["errors"][0]["code"], "UNSUPPORTED",
        "{method} {path}: {v}"
    );
}

/// Everything a client can do against `prefix` (e.g. `metalk8s-1.0.0-dev/`) on `port`.
fn exercise(port: u16, prefix: &str, imgs: &[Img], scratch: &Path) {
    let host = format!("127.0.0.1:{port}");
    std::fs::create_dir_all(scratch).unwrap();
    // API root and redirect.
    let (s, h, body) = testkit::http_request(port, "GET", "/v2/", &[]);
    assert_eq!((s, body.as_slice()), (200, &b"{}"[..]));
    assert_eq!(
        header(&h, "docker-distribution-api-version"),
        Some("registry/2.0")
    );
    // `/v2` answers like `/v2/` (no HTML redirect page).
    let (s, h, body) = testkit::http_request(port, "GET", "/v2", &[]);
    assert_eq!((s, body.as_slice()), (200, &b"{}"[..]));
    assert_eq!(header(&h, "content-type"), Some("application/json"));
    assert_eq!(
        header(&h, "docker-distribution-api-version"),
        Some("registry/2.0")
    );
    for (method, path) in [
        ("POST", "/v2"),
        ("PUT", "/v2/"),
        ("DELETE", "/v2/"),
        (
            "POST",
            format!("/v2/{prefix}new-image/blobs/uploads/").as_str(),
        ),
        (
            "PUT",
            format!("/v2/{prefix}new-image/manifests/1.0").as_str(),
        ),
        ("OPTIONS", "/v2/no-such-prefix/x/tags/list"),
    ] {
        assert_unsupported(port, method, path);
    }

    let mut tags: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for img in imgs {
        tags.entry(img.name).or_default().push(img.tag);
    }
    for (name, want) in &tags {
        let out = testkit::run_ok(
            skopeo()
                .args(["list-tags", "--tls-verify=false"])
                .arg(format!("docker://{host}/{prefix}{name}")),
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut want = want.clone();
        want.sort();
        assert_eq!(v["Tags"], json!(want), "{name}");
        assert_eq!(v["Repository"], format!("{host}/{prefix}{name}"));
    }

    for (i, img) in imgs.iter().enumerate() {
        let repo = format!("{host}/{prefix}{}", img.name);
        let by_tag = format!("docker://{repo}:{}", img.tag);
        let by_digest = format!("docker://{repo}@sha256:{}", img.digest());
        let all: &[&str] = if img.is_index() { &["--all"] } else { &[] };

        // inspect: raw bytes identical, digest = sha256 of those bytes.
        let raw = testkit::run_ok(
            skopeo()
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(&by_tag),
        );
        assert_eq!(raw.stdout, img.manifest(), "{by_tag}");
        let out = testkit::run_ok(
            skopeo()
                .args(["inspect", "--tls-verify=false"])
                .arg(&by_tag),
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if !img.is_index() {
            assert_eq!(v["Digest"], format!("sha256:{}", img.digest()), "{by_tag}");
        }
        assert_eq!(v["Architecture"], "amd64");

        // copy by tag and by digest to dir: → identical to what skopeo wrote from the source.
        for (k, src) in [("tag", &by_tag), ("digest", &by_digest)] {
            let dest = scratch.join(format!("dir-{i}-{k}"));
            testkit::run_ok(
                skopeo()
                    .args(["copy", "-q", "--src-tls-verify=false"])
                    .args(all)
                    .arg(src)
                    .arg(format!("dir:{}", dest.display())),
            );
            assert_same_dir(&dest, &img.pristine);
        }

        // copy to oci: → blobs verified; same manifest digest when no conversion is needed.
        let oci = scratch.join(format!("oci-{i}"));
        testkit::run_ok(
            skopeo()
                .args(["copy", "-q", "--src-tls-verify=false"])
                .args(all)
                .arg(&by_digest)
                .arg(format!("oci:{}:{}", oci.display(), img.tag)),
        );
        let blobs = verified_oci_blobs(&oci);
        for l in referenced_blobs(img) {
            assert!(
                blobs.contains(&l),
                "{by_tag}: layer {l} missing from oci copy"
            );
        }
        let index: Value =
            serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
        if matches!(img.media_type, OCI_MANIFEST | OCI_INDEX) {
            assert_eq!(
                index["manifests"][0]["digest"],
                format!("sha256:{}", img.digest()),
                "{by_tag}"
            );
        }

        // HEAD manifests (by tag, by digest, children) and blobs: digest header, type, length.
        let base = format!("/v2/{prefix}{}", img.name);
        let mut manifests = vec![
            (
                format!("{base}/manifests/{}", img.tag),
                img.manifest(),
                img.media_type,
            ),
            (
                format!("{base}/manifests/sha256:{}", img.digest()),
                img.manifest(),
                img.media_type,
            ),
        ];
        for (fname, bytes) in dir_files(&img.pristine) {
            if let Some(hex) = fname.strip_suffix(".manifest.json") {
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                let mt = if img.media_type == DOCKER_LIST {
                    DOCKER_MANIFEST
                } else {
                    OCI_MANIFEST
                };
                assert_eq!(v["mediaType"], mt);
                manifests.push((format!("{base}/manifests/sha256:{hex}"), bytes, mt));
            }
        }
        for (path, bytes, mt) in manifests {
            for method in ["HEAD", "GET"] {
                let (s, h, body) = testkit::http_request(port, method, &path, &[]);
                assert_eq!(s, 200, "{method} {path}");
                assert_eq!(
                    header(&h, "docker-content-digest"),
                    Some(format!("sha256:{}", sha256_hex(&bytes)).as_str()),
                    "{path}"
                );
                assert_eq!(header(&h, "content-type"), Some(mt), "{path}");
                assert_eq!(
                    header(&h, "content-length"),
                    Some(bytes.len().to_string().as_str())
                );
                assert_eq!(
                    header(&h, "docker-distribution-api-version"),
                    Some("registry/2.0"),
                    "{method} {path}"
                );
                if method == "GET" {
                    assert_eq!(body, bytes);
                }
            }
            // Pushing over an existing manifest, deleting it: refused, the file is untouched.
            assert_unsupported(port, "PUT", &path);
            assert_unsupported(port, "DELETE", &path);
        }
        // The push endpoints of a known name.
        assert_unsupported(port, "POST", &format!("{base}/blobs/uploads/"));
        assert_unsupported(port, "PATCH", &format!("{base}/blobs/uploads/some-uuid"));
        assert_unsupported(port, "PUT", &format!("{base}/blobs/uploads/some-uuid"));
        assert_unsupported(port, "POST", &format!("{base}/tags/list"));
        assert_unsupported(port, "PUT", &format!("{base}/manifests/new-tag"));
        for (fname, bytes) in dir_files(&img.pristine) {
            if fname.len() == 64 {
                let path = format!("{base}/blobs/sha256:{fname}");
                let (s, h, body) = testkit::http_request(port, "HEAD", &path, &[]);
                assert_eq!(s, 200, "HEAD {path}");
                assert!(body.is_empty());
                assert_eq!(
                    header(&h, "docker-content-digest"),
                    Some(format!("sha256:{fname}").as_str())
                );
                assert_eq!(header(&h, "content-type"), Some("application/octet-stream"));
                assert_eq!(
                    header(&h, "content-length"),
                    Some(bytes.len().to_string().as_str())
                );
                assert_eq!(
                    header(&h, "docker-distribution-api-version"),
                    Some("registry/2.0")
                );
                assert_unsupported(port, "DELETE", &path);
                assert_unsupported(port, "POST", &path);
            }
        }

        // Unknown references of a known name.
        let zero = "0".repeat(64);
        assert_registry_error(
            port,
            &format!("{base}/manifests/no-such-tag"),
            "MANIFEST_UNKNOWN",
        );
        assert_registry_error(
            port,
            &format!("{base}/manifests/sha256:{zero}"),
            "MANIFEST_UNKNOWN",
        );
        assert_registry_error(port, &format!("{base}/blobs/sha256:{zero}"), "BLOB_UNKNOWN");
    }

    // Unknown names.
    for path in [
        format!("/v2/{prefix}no-such-image/manifests/1.0"),
        format!("/v2/{prefix}no-such-image/tags/list"),
        format!("/v2/{prefix}no-such-image/blobs/sha256:{}", "0".repeat(64)),
        "/v2/no-such-prefix/base/manifests/1.0".to_string(),
    ] {
        assert_registry_error(port, &path, "NAME_UNKNOWN");
    }
    // And the client sees them as errors.
    let out = testkit::run(
        skopeo()
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{host}/{prefix}base:no-such-tag")),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("manifest unknown"), "{err}");
}

/// Generates the MetalK8s-shaped includes (constants, per-version file with its `$…_images`
/// variable) plus a Solution include rendered from its Jinja template, serves them with nginx,
/// and runs [`exercise`] through both prefixes.
fn serve_and_exercise(images: &Path, imgs: &[Img], scratch: &Path) {
    let images = images.canonicalize().unwrap();
    let incs = scratch.join("incs");
    std::fs::create_dir_all(&incs).unwrap();
    let version = "1.0.0-dev";
    let common = generate(
        &images,
        &Options {
            constants: Constants::Only,
            ..Options::metalk8s(version)
        },
    )
    .unwrap();
    let product = generate(&images, &Options::metalk8s(version)).unwrap();
    let template = generate(&images, &Options::solution()).unwrap();
    println!("--- constants\n{common}--- product\n{product}--- solution\n{template}");
    let solution = template
        .replace("{{ repository }}", "example-solution-1.0.0")
        .replace("{{ registry_root }}", images.to_str().unwrap());
    assert!(!solution.contains("{{"));
    let mut body = format!(
        "    set $metalk8s_1_0_0_dev_images \"{}/\";\n",
        images.display()
    );
    // MetalK8s' include order (conf.d/*.inc, sorted): Solutions, per-version, then constants.
    for (name, text) in [
        ("example-solution-1.0.0-registry-config.inc", &solution),
        ("99-metalk8s-1.0.0-dev-registry.inc", &product),
        ("99-registry-common.inc", &common),
    ] {
        let p = incs.join(name);
        std::fs::write(&p, text).unwrap();
        body.push_str(&format!("    include \"{}\";\n", p.display()));
    }
    let server = testkit::start_nginx("", &body);
    exercise(
        server.port,
        "metalk8s-1.0.0-dev/",
        imgs,
        &scratch.join("product"),
    );
    exercise(
        server.port,
        "example-solution-1.0.0/",
        imgs,
        &scratch.join("solution"),
    );
}

#[test]
fn nginx_serves_the_tree_to_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let (images, imgs) = build_fixture(tmp.path());
    serve_and_exercise(&images, &imgs, &tmp.path().join("scratch"));
}

#[test]
fn nginx_serves_the_iso_content_to_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let (images, imgs) = build_fixture(tmp.path());
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::rename(&images, root.join("images")).unwrap();
    let extracted = iso_roundtrip(&root);
    serve_and_exercise(
        &extracted.join("images"),
        &imgs,
        &tmp.path().join("scratch"),
    );
}
