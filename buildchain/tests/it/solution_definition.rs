//! Solution definitions: unknown fields and bad values are refused with file:line:column, and
//! `manifest.yaml` is generated with sorted images and PyYAML-safe strings.

use buildchain::solution::build::{manifest_yaml, BuildInfo};
use buildchain::solution::definition::Definition;

fn write_def(dir: &std::path::Path, text: &str) {
    std::fs::write(dir.join("solution.yaml"), text).unwrap();
}

const GOOD: &str = "name: on\ndisplay_name: \"no\"\nversions: [\"1.0.0\", \"2.0.0-dev\"]\noperator:\n  image: on-operator\nimages:\n  - name: zeta\n    tag: \"1.0\"\n    registry: example.com/zeta@sha256:0000000000000000000000000000000000000000000000000000000000000000\n  - name: on-operator\n    local: images/op\n";

#[test]
fn unknown_field_is_reported_with_position() {
    let tmp = tempfile::tempdir().unwrap();
    write_def(tmp.path(), &format!("{GOOD}colour: blue\n"));
    let e = format!("{:#}", Definition::load(tmp.path()).unwrap_err());
    // `colour:` is line 12, column 1.
    let at = format!("{}:12:1", tmp.path().join("solution.yaml").display());
    assert!(
        e.starts_with(&format!("{at}: unknown field `colour`")),
        "{e}"
    );
    assert!(e.lines().any(|l| l.trim() == format!("--> {at}")), "{e}");
}

#[test]
fn bad_values_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (bad, what) in [
        (GOOD.replace("name: on\n", "name: On_\n"), "DNS-1123"),
        (GOOD.replace("\"2.0.0-dev\"", "\"2.0\""), "2.0"),
        (GOOD.replace("image: on-operator", "image: nope"), "nope"),
        (GOOD.replace("    tag: \"1.0\"\n", ""), "tag"),
        (
            GOOD.replace(
                "display_name: \"no\"",
                "display_name: A very very long display name",
            ),
            "32 bytes",
        ),
    ] {
        write_def(tmp.path(), &bad);
        let e = format!("{:#}", Definition::load(tmp.path()).unwrap_err());
        assert!(e.contains(what), "{what}: {e}");
    }
}

#[test]
fn manifest_yaml_is_pyyaml_safe() {
    let tmp = tempfile::tempdir().unwrap();
    write_def(tmp.path(), GOOD);
    let def = Definition::load(tmp.path()).unwrap();
    let info = BuildInfo {
        epoch: 0,
        host: "yes".into(),
        git_revision: "1e10".into(),
        signer: None,
    };
    let m = manifest_yaml(&def, "2.0.0-dev", &info).unwrap();
    let out = testkit::run_ok(
        std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(format!(
                r#"
import yaml
d = yaml.safe_load('''{m}''')
a = d["metadata"]["annotations"]; p = "solutions.metalk8s.scality.com/"
assert d["metadata"]["name"] == "on", d
assert a[p + "display-name"] == "no", a
assert a[p + "build-host"] == "yes", a
assert a[p + "git-revision"] == "1e10", a
assert a[p + "build-timestamp"] == "1970-01-01T00:00:00Z", a
assert a[p + "development-release"] == "1", a
assert d["spec"]["version"] == "2.0.0-dev"
assert d["spec"]["images"] == ["on-operator:2.0.0-dev", "zeta:1.0"], d
assert d["spec"]["operator"]["image"] == {{"name": "on-operator", "tag": "2.0.0-dev"}}
print("ok")
"#
            )),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok", "{m}");
}
