//! The images of built Solution ISOs are served by real nginx through the ISO's own
//! `registry-config.inc.j2` (placeholders substituted as MetalK8s' Salt does) and pulled back with
//! real skopeo; both versions are served side by side.

use crate::solution_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use buildchain::registry_config::{generate, Constants, Options};
use buildchain::solution::build::build_version;
use buildchain::solution::definition::Definition;
use solution_common::*;

fn files(d: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(d)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path()
                    .strip_prefix(d)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn nginx_serves_solution_images_to_skopeo() {
    let skopeo = testkit::require_tool("skopeo");
    let osirrox = testkit::require_tool("osirrox");
    let tmp = tempfile::tempdir().unwrap();
    let def = Definition::load(&example_dir()).unwrap();
    let store = store(tmp.path());
    let out = tmp.path().join("dist");
    let mut body = String::new();
    let mut mounts = Vec::new();
    for v in ["1.0.0", "1.1.0"] {
        let built = build_version(&def, &example_dir(), v, &out, &store, &info()).unwrap();
        // Mount = extract the ISO (what ships), as /srv/scality/<name>-<version>.
        let mount = tmp.path().join(format!("srv/example-solution-{v}"));
        testkit::run_ok(
            Command::new(&osirrox)
                .arg("-indev")
                .arg(&built.iso)
                .args(["-extract", "/"])
                .arg(&mount),
        );
        testkit::run_ok(Command::new("chmod").arg("-R").arg("u+w").arg(&mount));
        let template = std::fs::read_to_string(mount.join("registry-config.inc.j2")).unwrap();
        let rendered = template
            .replace("{{ repository }}", &format!("example-solution-{v}"))
            .replace(
                "{{ registry_root }}",
                mount
                    .join("images")
                    .canonicalize()
                    .unwrap()
                    .to_str()
                    .unwrap(),
            );
        assert!(!rendered.contains("{{"), "{rendered}");
        let inc = tmp.path().join(format!("example-solution-{v}.inc"));
        std::fs::write(&inc, rendered).unwrap();
        body.push_str(&format!("    include \"{}\";\n", inc.display()));
        mounts.push((v, mount));
    }
    // The registry constants (`/v2/`…) come from the product's include, as on a cluster.
    let common = generate(
        &mounts[0].1.join("images"),
        &Options {
            constants: Constants::Only,
            ..Options::metalk8s("0.0.0")
        },
    )
    .unwrap();
    let inc = tmp.path().join("99-registry-common.inc");
    std::fs::write(&inc, common).unwrap();
    body.push_str(&format!("    include \"{}\";\n", inc.display()));
    let server = testkit::start_nginx("", &body);
    std::fs::create_dir_all(tmp.path().join("pulled")).unwrap();
    for (v, mount) in &mounts {
        for image in ["base-server", "example-solution-operator"] {
            let dest = tmp.path().join(format!("pulled/{image}-{v}"));
            testkit::run_ok(
                Command::new(&skopeo)
                    .args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"])
                    .arg(format!(
                        "docker://127.0.0.1:{}/example-solution-{v}/{image}:{v}",
                        server.port
                    ))
                    .arg(format!("dir:{}", dest.display())),
            );
            let want = files(&mount.join(format!("images/{image}/{v}")));
            let got = files(&dest);
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "{image}:{v}"
            );
            assert!(got == want, "{image}:{v}: pulled bytes differ from the ISO");
        }
        // Tags are listed under the Solution's repository.
        let out = testkit::run_ok(
            Command::new(&skopeo)
                .args(["list-tags", "--tls-verify=false"])
                .arg(format!(
                    "docker://127.0.0.1:{}/example-solution-{v}/example-solution-operator",
                    server.port
                )),
        );
        let tags: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(tags["Tags"], serde_json::json!([v]));
    }
}
