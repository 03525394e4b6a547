//! Issue 12: `plan` (predicted ISO size), `diff` (text/JSON/HTML rendered in headless Chromium)
//! and delta ISOs (`delta build` / `delta apply` byte-identical, wrong base refused).

mod solution_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");
const ISO: &str = "metalk8s-130.0.0-dev.iso";

struct Checkout {
    dir: tempfile::TempDir,
    store: tempfile::TempDir,
}

impl Checkout {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        testkit::copy_product_repo(dir.path());
        Checkout {
            dir,
            store: tempfile::tempdir().unwrap(),
        }
    }
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--repo")
            .arg(self.dir.path())
            .arg("--no-progress")
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("BUILD_HOST", "ci")
            .env("BUILDCHAIN_STORE", self.store.path())
            .env_remove("BUILD_ROOT")
            .env_remove("PROJECT_NAME")
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> Output {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "{args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn iso(&self) -> PathBuf {
        self.path().join("dist").join(ISO)
    }
}

fn run_ok(args: &[&Path]) -> Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

fn sha256(p: &Path) -> String {
    buildchain::fsutil::sha256_file(p).unwrap()
}

fn append(p: &Path, text: &str) {
    let mut s = std::fs::read_to_string(p).unwrap();
    s.push_str(text);
    std::fs::write(p, s).unwrap();
}

/// The example Solution's 1.0.0 and 1.1.0 ISOs, mastered with our writer.
fn solution_isos(tmp: &Path) -> (PathBuf, PathBuf) {
    let mut out = Vec::new();
    for v in ["1.0.0", "1.1.0"] {
        let root = solution_common::tree(tmp, v);
        let iso = tmp.join(format!("example-solution-{v}.iso"));
        solution_common::master_ours(&root, &iso, &format!("example-solution {v}"));
        out.push(iso);
    }
    (out[0].clone(), out[1].clone())
}

/// Digests (hex) of the config and layers of `images/<name>/<tag>/manifest.json` in `root`.
fn blobs(root: &Path, name: &str, tag: &str) -> Vec<(String, u64)> {
    let m: Value = serde_json::from_slice(
        &std::fs::read(root.join(format!("images/{name}/{tag}/manifest.json"))).unwrap(),
    )
    .unwrap();
    let mut v = vec![&m["config"]];
    v.extend(m["layers"].as_array().unwrap());
    v.iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap()[7..].to_string(),
                d["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn plan_predicts_the_product_iso_size_and_media() {
    let c = Checkout::new();
    let p = json(&c.ok(&["plan", "--format", "json", "--media", "409600"]));
    c.ok(&[]);
    let real = std::fs::metadata(c.iso()).unwrap().len();
    let predicted = p["predicted_iso_bytes"].as_u64().unwrap();
    // Exact: the writer's own layout over the tree populate_iso writes.
    assert_eq!(predicted, real, "{p:#}");
    assert_eq!(p["prediction"], "exact");
    assert_eq!(p["bytes_to_fetch"], 0);
    let names: Vec<&str> = p["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["metalk8s-base", "metalk8s-utils", "pause"]);
    // Every image derives from metalk8s-base: its layer and nothing else is shared.
    let root = c.path().join("_build/root");
    let base = blobs(&root, "metalk8s-base", "1.0");
    let base_layer = &base[1];
    for i in p["images"].as_array().unwrap() {
        assert_eq!(i["shared_bytes"], base_layer.1, "{i}");
        assert_eq!(i["in_store_bytes"], i["compressed_bytes"], "{i}");
        assert_eq!(i["source"], "local");
    }
    let total: u64 = p["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["compressed_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(p["image_bytes"], total);
    assert_eq!(
        p["unique_image_bytes"].as_u64().unwrap(),
        total - 2 * base_layer.1
    );
    let media: Vec<(String, u64, bool, u64)> = p["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["media"].as_str().unwrap().to_string(),
                m["capacity"].as_u64().unwrap(),
                m["fits"].as_bool().unwrap(),
                m["volumes_lower_bound"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        media,
        [
            ("dvd5".to_string(), 4_707_319_808, true, 1),
            ("dvd9".to_string(), 8_543_666_176, true, 1),
            ("bd25".to_string(), 25_025_314_816, true, 1),
            ("bd50".to_string(), 50_050_629_632, true, 1),
            (
                "409600 bytes".to_string(),
                409_600,
                false,
                real.div_ceil(409_600)
            ),
        ]
    );
    // Text form names the prediction.
    let text = String::from_utf8(c.ok(&["plan"]).stdout).unwrap();
    assert!(
        text.contains(&format!("predicted ISO: {real} bytes (")),
        "{text}"
    );
    // A bad medium is a usage error.
    let bad = c.cmd(&["plan", "--media", "floppy"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "error: --media: invalid media \"floppy\": expected dvd5, dvd9, bd25, bd50 or a size in bytes (at least 409600)\n"
    );
}

#[test]
fn diff_of_solution_versions_renders_in_chromium() {
    let chromium = testkit::require_tool("chromium");
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = solution_isos(tmp.path());
    let d = json(&run_ok(&[
        Path::new("diff"),
        &old,
        &new,
        Path::new("--format"),
        Path::new("json"),
    ]));
    let r0 = tmp.path().join("root-1.0.0");
    let r1 = tmp.path().join("root-1.1.0");
    let old_blobs: Vec<String> = ["base-server", "example-solution-operator"]
        .iter()
        .flat_map(|n| blobs(&r0, n, "1.0.0"))
        .map(|(h, _)| h)
        .collect();
    let mut expected = Vec::new();
    for n in ["base-server", "example-solution-operator"] {
        let b = blobs(&r1, n, "1.1.0");
        let shared: Vec<_> = b.iter().filter(|(h, _)| old_blobs.contains(h)).collect();
        let fresh: Vec<_> = b.iter().filter(|(h, _)| !old_blobs.contains(h)).collect();
        expected.push(serde_json::json!({
            "image": format!("{n}:1.1.0"),
            "old_image": format!("{n}:1.0.0"),
            "shared_blobs": shared.len(),
            "shared_bytes": shared.iter().map(|x| x.1).sum::<u64>(),
            "new_blobs": fresh.len(),
            "new_bytes": fresh.iter().map(|x| x.1).sum::<u64>(),
        }));
    }
    let got: Vec<Value> = d["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            serde_json::json!({
                "image": i["image"], "old_image": i["old_image"],
                "shared_blobs": i["shared_blobs"], "shared_bytes": i["shared_bytes"],
                "new_blobs": i["new_blobs"], "new_bytes": i["new_bytes"],
            })
        })
        .collect();
    assert_eq!(got, expected);
    // The base-server layers are shared; the operator has new blobs.
    assert_eq!(expected[0]["new_blobs"], 0);
    assert!(expected[1]["new_blobs"].as_u64().unwrap() > 0);
    let other: Vec<&str> = d["other"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(other, ["manifest.yaml", "registry-config.inc.j2"]);
    assert_eq!(
        d["size_delta"].as_i64().unwrap(),
        std::fs::metadata(&new).unwrap().len() as i64
            - std::fs::metadata(&old).unwrap().len() as i64
    );

    // HTML: one self-contained file, rendered by headless Chromium.
    let html = tmp.path().join("diff.html");
    run_ok(&[
        Path::new("diff"),
        &old,
        &new,
        Path::new("--format"),
        Path::new("html"),
        Path::new("-o"),
        &html,
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    for forbidden in ["<script", "<link", "src=", "http://", "https://"] {
        let allowed_ns = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(
            !allowed_ns.contains(forbidden),
            "external asset {forbidden}"
        );
    }
    let profile = tempfile::tempdir().unwrap();
    let chrome = |extra: &[&str]| {
        let out = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", html.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let dom = String::from_utf8(chrome(&["--dump-dom"]).stdout).unwrap();
    for row in [
        "<tr class=\"image changed\" data-image=\"base-server:1.1.0\"><td>changed</td><td>base-server:1.0.0 → base-server:1.1.0</td>",
        "<tr class=\"image changed\" data-image=\"example-solution-operator:1.1.0\">",
        "<tr class=\"file changed\" data-path=\"manifest.yaml\">",
        "<tr class=\"file changed\" data-path=\"registry-config.inc.j2\">",
        "<svg id=\"size-chart\"",
        "class=\"bar bar-new-images\"",
    ] {
        assert!(dom.contains(row), "rendered DOM lacks {row}:\n{dom}");
    }
    let png = tmp.path().join("diff.png");
    chrome(&[
        &format!("--screenshot={}", png.display()),
        "--window-size=1200,900",
    ]);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((w, h), (1200, 900));
    // A blank page compresses to almost nothing; text and bars do not.
    assert!(bytes.len() > 20_000, "screenshot is {} bytes", bytes.len());
}

#[test]
fn diff_and_delta_of_two_product_builds() {
    let a = Checkout::new();
    a.ok(&[]);
    let work = tempfile::tempdir().unwrap();
    let old = work.path().join("old.iso");
    std::fs::copy(a.iso(), &old).unwrap();
    // Bump an RPM release, a Salt state and the pause image.
    let spec = a.path().join("packages/redhat/8/metalk8s-sosreport.yaml");
    let s = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(
        &spec,
        s.replace("release: \"1{{ dist }}\"", "release: \"2{{ dist }}\""),
    )
    .unwrap();
    append(
        &a.path().join("salt/states/metalk8s/archives/mounted.sls"),
        "# bumped\n",
    );
    append(&a.path().join("images/pause/pause.sh"), "# bumped\n");
    a.ok(&[]);
    let new = a.iso();
    let d = json(&run_ok(&[
        Path::new("diff"),
        &old,
        &new,
        Path::new("--format"),
        Path::new("json"),
    ]));
    let rpms = &d["rpms"];
    assert_eq!(rpms.as_array().unwrap().len(), 1, "{rpms:#}");
    assert_eq!(rpms[0]["package"], "metalk8s-sosreport.noarch");
    assert_eq!(rpms[0]["change"], "upgraded");
    assert!(
        rpms[0]["old"].as_str().unwrap().ends_with("-1.el8"),
        "{rpms}"
    );
    assert!(
        rpms[0]["new"].as_str().unwrap().ends_with("-2.el8"),
        "{rpms}"
    );
    let salt: Vec<(&str, &str)> = d["salt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["change"].as_str().unwrap()))
        .collect();
    // The state itself, plus what the image bump regenerates (registry include, versions).
    assert_eq!(
        salt,
        [
            ("salt/metalk8s/archives/mounted.sls", "changed"),
            ("salt/metalk8s/repo/files/metalk8s-registry.inc", "changed"),
            ("salt/metalk8s/versions.json", "changed"),
        ]
    );
    let images: Vec<(&str, u64)> = d["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["image"].as_str().unwrap(),
                i["new_blobs"].as_u64().unwrap(),
            )
        })
        .collect();
    // The pause image gets a new layer and config; the others are unchanged.
    assert_eq!(images, [("pause:3.9", 2)]);

    // Delta of the two builds: rebuilds NEW byte-identical.
    let delta = work.path().join("delta.iso");
    run_ok(&[
        Path::new("delta"),
        Path::new("build"),
        &old,
        &new,
        Path::new("-o"),
        &delta,
    ]);
    let rebuilt = work.path().join("rebuilt.iso");
    run_ok(&[
        Path::new("delta"),
        Path::new("apply"),
        &old,
        &delta,
        Path::new("-o"),
        &rebuilt,
    ]);
    assert_eq!(sha256(&rebuilt), sha256(&new));
    // The build option: DELTA_BASE makes the `delta_iso` task write the same delta next to the ISO.
    let out = Command::new(BIN)
        .arg("--repo")
        .arg(a.path())
        .args(["--no-progress", "delta_iso"])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("BUILD_HOST", "ci")
        .env("BUILDCHAIN_STORE", a.store.path())
        .env("DELTA_BASE", &old)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let next_to = a.path().join("dist/metalk8s-130.0.0-dev.delta.iso");
    assert_eq!(sha256(&next_to), sha256(&delta));
    let check = Command::new(testkit::require_tool("checkisomd5"))
        .arg(&rebuilt)
        .output()
        .unwrap();
    assert!(check.status.success());
}

#[test]
fn delta_of_solution_versions_is_small_exact_and_names_its_base() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = solution_isos(tmp.path());
    let delta = tmp.path().join("delta.iso");
    let out = run_ok(&[
        Path::new("delta"),
        Path::new("build"),
        &old,
        &new,
        Path::new("-o"),
        &delta,
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    // The delta ISO is valid on its own.
    let check = Command::new(testkit::require_tool("checkisomd5"))
        .arg(&delta)
        .output()
        .unwrap();
    assert!(check.status.success());
    let recipe = buildchain::delivery::delta::read_recipe(&delta).unwrap();
    assert_eq!(recipe.base.sha256, sha256(&old));
    assert_eq!(recipe.new.sha256, sha256(&new));
    assert_eq!(recipe.new.volume_id, "example-solution 1.1.0");
    assert_eq!(recipe.new.timestamp, 1_700_000_000);
    assert!(recipe.new.implant_md5);
    // Size: the new unique bytes plus metadata, within 5 %, over the fixed framing of any ISO
    // (system area, descriptors, path tables, root directories, 150 padding sectors).
    let r1 = tmp.path().join("root-1.1.0");
    let r0 = tmp.path().join("root-1.0.0");
    let old_hashes: std::collections::BTreeSet<String> = walkdir::WalkDir::new(&r0)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| sha256(e.path()))
        .collect();
    let mut payload = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    for e in walkdir::WalkDir::new(&r1)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        if !e.file_type().is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().to_string();
        let blob = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        let h = sha256(e.path());
        if (!blob || !old_hashes.contains(&h)) && seen.insert(h) {
            payload += e.metadata().unwrap().len().div_ceil(2048) * 2048;
        }
    }
    let recipe_bytes = serde_json::to_vec_pretty(&recipe).unwrap().len() as u64 + 1;
    payload += recipe_bytes.div_ceil(2048) * 2048;
    // The registry include serving NEW from the two mounts is metadata too.
    let mut rd = iso9660_writer::IsoReader::open(std::fs::File::open(&delta).unwrap()).unwrap();
    let inc = rd.find("registry-delta.inc.j2").unwrap().unwrap();
    payload += inc.size.div_ceil(2048) * 2048;
    // The framing: the same ISO with every file empty (descriptors, path tables, directory
    // records, padding): what is left is the file data.
    let skeleton = tmp.path().join("skeleton");
    std::fs::create_dir(&skeleton).unwrap();
    let mut t = buildchain::solution::tree::IsoTree::open(&delta).unwrap();
    use buildchain::solution::tree::{FileTree, Kind};
    for e in t.entries().unwrap() {
        let p = skeleton.join(&e.path);
        match e.kind {
            Kind::Dir => std::fs::create_dir_all(&p).unwrap(),
            _ => std::fs::write(&p, b"").unwrap(),
        }
    }
    let framing =
        iso9660_writer::predict_size(&skeleton, &iso9660_writer::MasterOptions::default()).unwrap();
    let size = std::fs::metadata(&delta).unwrap().len();
    eprintln!(
        "delta {size} bytes, payload {payload}, framing {framing}, new {} bytes: {text}",
        std::fs::metadata(&new).unwrap().len()
    );
    assert!(size >= framing + payload);
    assert!(
        (size - framing) as f64 <= payload as f64 * 1.05,
        "delta {size} bytes, framing {framing}, payload {payload}"
    );

    // apply reproduces the full ISO's sha256.
    let rebuilt = tmp.path().join("rebuilt.iso");
    run_ok(&[
        Path::new("delta"),
        Path::new("apply"),
        &old,
        &delta,
        Path::new("-o"),
        &rebuilt,
    ]);
    assert_eq!(sha256(&rebuilt), sha256(&new));

    // Any other base is refused, and nothing is written.
    let wrong = tmp.path().join("wrong.iso");
    let out = Command::new(BIN)
        .args(["delta", "apply"])
        .arg(&new)
        .arg(&delta)
        .arg("-o")
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: {} is not the base of {}: the delta needs an ISO with sha256 {}, this one has sha256 {}\n",
            new.display(),
            delta.display(),
            sha256(&old),
            sha256(&new)
        )
    );
    assert!(!wrong.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".bctmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn plan_with_a_registry_image_reads_manifests_only() {
    let reg = testkit::start_docker_registry();
    // Seed the registry with the product's metalk8s-utils image (skopeo, plain HTTP).
    let a = Checkout::new();
    a.ok(&["images:metalk8s-utils"]);
    let layout = a.path().join("_build/root/images/metalk8s-utils/1.0");
    let skopeo = testkit::require_tool("skopeo");
    testkit::run_ok(
        Command::new(&skopeo)
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("dir:{}", layout.display()))
            .arg(format!("docker://{}/test/utils:1.0", reg.host())),
    );
    let raw = testkit::run_ok(Command::new(&skopeo).args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/test/utils:1.0", reg.host()),
    ]));
    let digest = buildchain::fsutil::sha256_bytes(&raw.stdout);
    let m: Value = serde_json::from_slice(&raw.stdout).unwrap();

    // The same image, now pinned from the registry instead of built.
    let b = Checkout::new();
    let inv = b.path().join("images/inventory.yaml");
    let text = std::fs::read_to_string(&inv).unwrap();
    assert!(text.contains("local: images/metalk8s-utils/"));
    std::fs::write(
        &inv,
        text.replace(
            "local: images/metalk8s-utils/",
            &format!("registry: \"{}/test/utils@sha256:{digest}\"", reg.host()),
        ),
    )
    .unwrap();
    let p = json(&b.ok(&["plan", "--format", "json"]));
    assert_eq!(p["prediction"], "placeholders");
    let remote = p["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "metalk8s-utils")
        .unwrap()
        .clone();
    assert_eq!(remote["source"], "registry");
    assert_eq!(remote["digest"], format!("sha256:{digest}"));
    let mut blob_list = vec![m["config"].clone()];
    blob_list.extend(m["layers"].as_array().unwrap().iter().cloned());
    let compressed: u64 = raw.stdout.len() as u64
        + blob_list
            .iter()
            .map(|d| d["size"].as_u64().unwrap())
            .sum::<u64>();
    assert_eq!(remote["compressed_bytes"], compressed);
    // No layer was downloaded: what is missing from the store is exactly what is to fetch.
    let store = buildchain::store::Store::open(b.store.path()).unwrap();
    let missing: u64 = blob_list
        .iter()
        .filter(|d| !store.contains(&d["digest"].as_str().unwrap()[7..]))
        .map(|d| d["size"].as_u64().unwrap())
        .sum();
    assert!(missing > 0);
    assert_eq!(p["bytes_to_fetch"], missing);
    assert_eq!(remote["in_store_bytes"], compressed - missing);
    // Its first layer is metalk8s-base's (built locally, in the store): shared.
    let base_layer = &m["layers"][0];
    assert!(store.contains(&base_layer["digest"].as_str().unwrap()[7..]));
    assert_eq!(remote["shared_bytes"], base_layer["size"]);
    assert_eq!(
        missing,
        compressed - raw.stdout.len() as u64 - base_layer["size"].as_u64().unwrap()
    );

    b.ok(&[]);
    let real = std::fs::metadata(b.iso()).unwrap().len();
    let predicted = p["predicted_iso_bytes"].as_u64().unwrap();
    eprintln!("predicted {predicted}, real {real}");
    assert!(
        predicted.abs_diff(real) * 100 <= real,
        "predicted {predicted}, real {real}"
    );
}

#[test]
fn delta_apply_refuses_a_corrupted_delta_and_diff_refuses_a_non_iso() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = solution_isos(tmp.path());
    let delta = tmp.path().join("delta.iso");
    run_ok(&[
        Path::new("delta"),
        Path::new("build"),
        &old,
        &new,
        Path::new("-o"),
        &delta,
    ]);
    // Flip one byte of manifest.yaml's data in the delta.
    let mut r = iso9660_writer::IsoReader::open(std::fs::File::open(&delta).unwrap()).unwrap();
    let e = r.find("manifest.yaml").unwrap().unwrap();
    let off = e.extents[0].lba as u64 * 2048;
    let mut bytes = std::fs::read(&delta).unwrap();
    bytes[off as usize] ^= 0x20;
    std::fs::write(&delta, &bytes).unwrap();
    let out_iso = tmp.path().join("out.iso");
    let out = Command::new(BIN)
        .args(["delta", "apply"])
        .arg(&old)
        .arg(&delta)
        .arg("-o")
        .arg(&out_iso)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("error: {}: manifest.yaml has sha256 ", delta.display());
    assert!(err.starts_with(&prefix), "{err}");
    assert!(err.contains(", manifest.yaml needs "), "{err}");
    assert!(!out_iso.exists());

    // diff of something that is neither a directory nor an ISO.
    let junk = tmp.path().join("junk.iso");
    std::fs::write(&junk, b"not an image").unwrap();
    let out = Command::new(BIN)
        .arg("diff")
        .arg(&junk)
        .arg(&new)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("error: {}: not an ISO image: ", junk.display())),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn delta_reproduces_links_symlinks_modes_and_empty_entries() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let old_root = tmp.path().join("old");
    let new_root = tmp.path().join("new");
    for r in [&old_root, &new_root] {
        std::fs::create_dir_all(r.join("images/app/1.0")).unwrap();
        std::fs::write(
            r.join(
                "images/app/1.0/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            testkit::pseudo_random_bytes(1, 300_000),
        )
        .unwrap();
    }
    // NEW: a blob shared with OLD (hard-linked twice), a new blob, a symlink, an executable
    // script, an empty file, an empty directory, a long name.
    let shared = new_root
        .join("images/app/1.0/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    std::fs::create_dir_all(new_root.join("images/other/2.0")).unwrap();
    std::fs::hard_link(
        &shared,
        new_root.join(
            "images/other/2.0/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
    )
    .unwrap();
    std::fs::write(
        new_root.join(
            "images/other/2.0/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        ),
        testkit::pseudo_random_bytes(2, 100_000),
    )
    .unwrap();
    std::os::unix::fs::symlink("images/app/1.0", new_root.join("current")).unwrap();
    std::fs::write(new_root.join("install.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        new_root.join("install.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(new_root.join("empty.txt"), b"").unwrap();
    std::fs::create_dir(new_root.join("nothing-here")).unwrap();
    std::fs::write(
        new_root.join(format!("{}.txt", "long-name-".repeat(12))),
        b"x",
    )
    .unwrap();
    let (old, new) = (tmp.path().join("old.iso"), tmp.path().join("new.iso"));
    solution_common::master_ours(&old_root, &old, "OLD");
    solution_common::master_ours(&new_root, &new, "NEW 2.0");
    let delta = tmp.path().join("delta.iso");
    let out = run_ok(&[
        Path::new("delta"),
        Path::new("build"),
        &old,
        &new,
        Path::new("-o"),
        &delta,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "wrote {} ({} bytes): 2 files from the base, 4 in the delta (100019 bytes)\n",
            delta.display(),
            std::fs::metadata(&delta).unwrap().len()
        )
    );
    let rebuilt = tmp.path().join("rebuilt.iso");
    run_ok(&[
        Path::new("delta"),
        Path::new("apply"),
        &old,
        &delta,
        Path::new("-o"),
        &rebuilt,
    ]);
    assert_eq!(sha256(&rebuilt), sha256(&new));
}

#[test]
fn delta_serves_every_new_image_from_the_two_mounts_to_containerd() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (old, new) = solution_isos(tmp.path());
    let delta = tmp.path().join("delta.iso");
    run_ok(&[
        Path::new("delta"),
        Path::new("build"),
        &old,
        &new,
        Path::new("-o"),
        &delta,
    ]);
    // Both ISOs extracted side by side, as two mounts would be.
    let (old_dir, delta_dir) = (tmp.path().join("old"), tmp.path().join("delta"));
    for (iso, dir) in [(&old, &old_dir), (&delta, &delta_dir)] {
        run_ok(&[Path::new("iso"), Path::new("extract"), iso, dir]);
    }
    let template = std::fs::read_to_string(delta_dir.join("registry-delta.inc.j2")).unwrap();
    // The shared base-server layers come from the base mount, the rest from the delta.
    assert_eq!(template.matches("alias \"{{ base_root }}/").count(), 5);
    assert!(template.contains("alias \"{{ delta_root }}/"));
    let include = template
        .replace("{{ repository }}", "example-solution-1.1.0")
        .replace("{{ base_root }}", old_dir.to_str().unwrap())
        .replace("{{ delta_root }}", delta_dir.to_str().unwrap());
    let constants = buildchain::registry_config::generate(
        &delta_dir.join("images"),
        &buildchain::registry_config::Options {
            constants: buildchain::registry_config::Constants::Only,
            ..buildchain::registry_config::Options::metalk8s("1.0.0")
        },
    )
    .unwrap();
    let incs = tmp.path().join("incs");
    std::fs::create_dir(&incs).unwrap();
    std::fs::write(incs.join("delta.inc"), include).unwrap();
    std::fs::write(incs.join("common.inc"), constants).unwrap();
    let nginx = testkit::start_nginx_unprivileged(&format!(
        "    include \"{0}/delta.inc\";\n    include \"{0}/common.inc\";\n",
        incs.display()
    ));
    let ctd = testkit::start_containerd();
    let r1 = tmp.path().join("root-1.1.0");
    for name in ["base-server", "example-solution-operator"] {
        let digest = sha256(&r1.join(format!("images/{name}/1.1.0/manifest.json")));
        for r in [
            format!("{}/example-solution-1.1.0/{name}:1.1.0", nginx.host()),
            format!(
                "{}/example-solution-1.1.0/{name}@sha256:{digest}",
                nginx.host()
            ),
        ] {
            let out = testkit::run(ctd.ctr("k8s.io").args([
                "images",
                "pull",
                "--plain-http",
                "--snapshotter",
                "native",
                &r,
            ]));
            assert!(
                out.status.success(),
                "ctr pull {r}:\n{}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                testkit::nginx_error_log(&nginx)
            );
        }
    }
    let check = testkit::run_ok(ctd.ctr("k8s.io").args(["images", "check"]));
    let text = String::from_utf8(check.stdout).unwrap();
    let complete = text.lines().filter(|l| l.contains("complete (")).count();
    assert_eq!(complete, 4, "{text}");
}
