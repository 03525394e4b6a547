//! Issue 12: `plan` (predicted ISO size) and `diff` (text/JSON/HTML rendered in headless
//! Chromium), and a product diff whose delta rebuilds the new ISO. Delta ISOs of Solutions are in
//! `delivery_delta.rs`.

use crate::delivery_common;

use std::path::Path;
use std::process::Command;

use delivery_common::*;
use serde_json::Value;

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
