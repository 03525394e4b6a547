//! Issue 16 item 5: with `SOURCE_DATE_EPOCH` set, no byte depends on the machine. Two checkouts
//! at different paths — the second with owner-only file modes, built under `umask 077`, another
//! `TZ` and `LANG`, and another host name (`unshare --uts`) — give the same product ISO, the
//! same Solution ISOs, the same SBOMs, the same `CONTENTS.json` and the same signature.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::{require_tool, run_ok};

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");

/// Makes every file and directory of `dir` owner-only, as a checkout made under `umask 077`.
fn owner_only(dir: &Path) {
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        if e.file_type().is_symlink() {
            continue;
        }
        let mode = e.metadata().unwrap().permissions().mode();
        let new = if e.file_type().is_dir() || mode & 0o100 != 0 {
            0o700
        } else {
            0o600
        };
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(new)).unwrap();
    }
}

fn gpg_key(home: &Path) -> PathBuf {
    let gpg = |args: &[&str]| {
        run_ok(
            Command::new("gpg")
                .env("GNUPGHOME", home)
                .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
                .args(args),
        )
    };
    gpg(&[
        "--quick-gen-key",
        "Repro <repro@example.invalid>",
        "default",
        "default",
        "never",
    ]);
    let sec = gpg(&["--armor", "--export-secret-keys"]);
    let path = home.join("secret.asc");
    std::fs::write(&path, sec.stdout).unwrap();
    path
}

/// Builds `iso` and `solutions` in `repo`; `hostile` runs under another host name, umask 077,
/// another time zone and locale.
fn build(repo: &Path, store: &Path, key: &Path, hostile: bool) {
    let mut c = if hostile {
        let mut c = Command::new("unshare");
        c.args([
            "--uts",
            "sh",
            "-c",
            "hostname repro-other-host && umask 077 && exec \"$0\" \"$@\"",
        ])
        .arg(BIN)
        .env("TZ", "Pacific/Chatham")
        .env("LANG", "fr_FR.UTF-8")
        .env("LC_ALL", "tr_TR.UTF-8");
        c
    } else {
        let mut c = Command::new(BIN);
        c.env("TZ", "UTC").env("LANG", "C.UTF-8");
        c
    };
    c.arg("--repo")
        .arg(repo)
        .arg("--no-progress")
        .arg("--signing-key")
        .arg(key)
        .args(["solutions", "iso"])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("BUILDCHAIN_STORE", store)
        .env_remove("BUILD_HOST")
        .env_remove("BUILD_ROOT")
        .env_remove("PROJECT_NAME");
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "build in {} failed:\n{}\n{}",
        repo.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file of the outputs compared, relative to the checkout.
fn outputs(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for sub in ["dist", "_build/root"] {
        for e in walkdir::WalkDir::new(repo.join(sub)).sort_by_file_name() {
            let e = e.unwrap();
            if e.file_type().is_file() {
                v.push(
                    e.path()
                        .strip_prefix(repo)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    v
}

#[test]
fn same_bytes_across_paths_umask_host_tz_and_locale() {
    require_tool("unshare");
    require_tool("gpg");
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test changes the host name in a UTS namespace (`unshare --uts`): run it as root"
    );
    let gh = tempfile::Builder::new()
        .prefix("gpg")
        .tempdir_in("/tmp")
        .unwrap();
    let key = gpg_key(gh.path());
    let a = tempfile::tempdir().unwrap();
    let b_parent = tempfile::tempdir().unwrap();
    let b = b_parent.path().join("a/much/longer/checkout path");
    testkit::copy_product_repo(a.path());
    std::fs::create_dir_all(&b).unwrap();
    testkit::copy_product_repo(&b);
    owner_only(&b);
    let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    build(a.path(), sa.path(), &key, false);
    build(&b, sb.path(), &key, true);
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", gh.path())
        .args(["--kill", "gpg-agent"])
        .output();

    let (la, lb) = (outputs(a.path()), outputs(&b));
    assert_eq!(la, lb, "the two builds wrote different files");
    for must in [
        "dist/metalk8s-130.0.0-dev.iso",
        "dist/metalk8s-130.0.0-dev.spdx.json",
        "_build/root/CONTENTS.json",
        "_build/root/CONTENTS.json.asc",
        "_build/root/sbom.spdx.json",
        "_build/root/product.txt",
    ] {
        assert!(la.iter().any(|f| f == must), "{must} not built: {la:?}");
    }
    assert!(
        la.iter()
            .any(|f| f.starts_with("dist/solutions/") && f.ends_with(".iso")),
        "no Solution ISO built: {la:?}"
    );
    assert!(
        la.iter()
            .any(|f| f.starts_with("dist/solutions/") && f.ends_with(".spdx.json")),
        "no Solution SBOM built: {la:?}"
    );
    let product = std::fs::read_to_string(a.path().join("_build/root/product.txt")).unwrap();
    assert!(product.contains("\nBUILD_HOST=buildchain\n"), "{product}");
    let differ: Vec<&String> = la
        .iter()
        .filter(|f| std::fs::read(a.path().join(f)).unwrap() != std::fs::read(b.join(f)).unwrap())
        .collect();
    let explained: Vec<String> = differ
        .iter()
        .map(|f| {
            if !f.ends_with(".iso") {
                return f.to_string();
            }
            if listing(&a.path().join(f)).0 == listing(&b.join(f)).0 {
                format!("{f} (only Rock Ridge file modes differ)")
            } else {
                format!("{f} (content or names differ)")
            }
        })
        .collect();
    assert!(
        differ.is_empty(),
        "files that differ between the two builds: {explained:?}"
    );
}

/// `isoinfo -R -l` of an ISO as (listing without the mode column, mode column).
fn listing(iso: &Path) -> (String, String) {
    require_tool("isoinfo");
    let o = run_ok(Command::new("isoinfo").args(["-R", "-l", "-i"]).arg(iso));
    let (mut rest, mut modes) = (String::new(), String::new());
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        if l.len() > 10 && matches!(l.as_bytes()[0], b'd' | b'-' | b'l') {
            modes.push_str(&l[..10]);
            rest.push_str(&l[10..]);
        } else {
            rest.push_str(l);
        }
        rest.push('\n');
    }
    (rest, modes)
}
