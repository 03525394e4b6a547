//! Must-show of issue 6 for the packages built here: RPMs built from `packages/` pass rpm's own
//! checks and install; the repository we write is read by dnf and by createrepo_c's parser the
//! same way as createrepo_c's own repodata; builds are byte-identical; a dropped package leaves
//! the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use buildchain::config::{Profile, SettingOverrides, Settings};
use buildchain::packaging::product::{build_all, Product};
use testkit::{require_tool, run, run_ok};

const SDE: &str = "1700000000";

fn settings(repo_root: &Path, build_root: &Path) -> Settings {
    let o = SettingOverrides {
        build_root: Some(build_root.to_path_buf()),
        source_date_epoch: Some(SDE.parse().unwrap()),
        profile: Some(Profile::Default),
        project_name: Some("MetalK8s".to_string()),
        ..Default::default()
    };
    Settings::load(repo_root, &o).unwrap()
}

fn build(repo_root: &Path, build_root: &Path) -> (Product, Vec<PathBuf>) {
    let s = settings(repo_root, build_root);
    let p = Product::from_settings(&s);
    let files = build_all(&p, None).unwrap();
    (p, files)
}

fn scality(p: &Product) -> PathBuf {
    p.repo_dir("scality")
}

fn rpm_path(p: &Product, name: &str) -> PathBuf {
    let dir = scality(p);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| {
            let n = f.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with(&format!("{name}-")) && n.ends_with(".rpm")
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} in {}", dir.display());
    found.pop().unwrap()
}

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn packaging_rpms_pass_rpm_checks_and_install() {
    require_tool("rpm");
    let tmp = tempfile::tempdir().unwrap();
    let (p, _) = build(&testkit::workspace_root(), tmp.path());
    let version = p.product_version.clone();
    let rpm_version = version.replace('-', "~");
    assert_eq!(
        scality(&p),
        tmp.path()
            .join("root/packages/redhat/8/metalk8s-scality-el8")
    );
    let release = rpm_path(&p, "metalk8s-release");
    let sos = rpm_path(&p, "metalk8s-sosreport");
    assert_eq!(
        release.file_name().unwrap().to_string_lossy(),
        format!("metalk8s-release-{rpm_version}-1.el8.noarch.rpm")
    );

    for f in [&release, &sos] {
        let info = text(&run_ok(Command::new("rpm").arg("-qip").arg(f)));
        assert!(
            info.contains(&format!("Version     : {rpm_version}")),
            "{info}"
        );
        assert!(info.contains("Release     : 1.el8"), "{info}");
        assert!(info.contains("Architecture: noarch"), "{info}");
        assert!(info.contains("License     : Apache-2.0"), "{info}");
        let k = run_ok(Command::new("rpm").arg("-Kv").arg(f));
        let k = text(&k);
        assert!(k.contains("Header SHA256 digest: OK"), "{k}");
        assert!(k.contains("Payload SHA256 digest: OK"), "{k}");
        assert!(!k.contains("BAD"), "{k}");
    }

    // Declared modes and owners.
    let l = text(&run_ok(Command::new("rpm").arg("-qlvp").arg(&sos)));
    let line = |path: &str| {
        l.lines()
            .find(|x| x.ends_with(path))
            .unwrap_or_else(|| panic!("{path} not in\n{l}"))
            .to_string()
    };
    assert!(
        line("/etc/metalk8s/sosreport.conf").starts_with("-rw-r-----"),
        "{l}"
    );
    assert!(
        line("/var/log/metalk8s/sosreport").starts_with("drwxr-x---"),
        "{l}"
    );
    assert!(line("/etc/metalk8s").starts_with("drwxr-xr-x"), "{l}");
    assert!(
        line("plugins/metalk8s.py").starts_with("-rw-r--r--    1 root     root"),
        "{l}"
    );
    let c = text(&run_ok(Command::new("rpm").arg("-qcp").arg(&sos)));
    assert_eq!(c.trim(), "/etc/metalk8s/sosreport.conf");

    // Scriptlets.
    let s = text(&run_ok(
        Command::new("rpm").args(["-qp", "--scripts"]).arg(&sos),
    ));
    assert!(s.contains("preinstall scriptlet (using /bin/sh):"), "{s}");
    assert!(s.contains("mkdir -p /var/log/metalk8s"), "{s}");
    assert!(s.contains("postinstall scriptlet (using /bin/sh):"), "{s}");
    assert!(
        s.contains("postuninstall scriptlet (using /bin/sh):"),
        "{s}"
    );

    // Dependencies and changelog.
    let r = text(&run_ok(
        Command::new("rpm").args(["-qp", "--requires"]).arg(&sos),
    ));
    assert!(r.lines().any(|x| x == "sos >= 3.1"), "{r}");
    let pr = text(&run_ok(
        Command::new("rpm")
            .args(["-qp", "--provides"])
            .arg(&release),
    ));
    assert!(
        pr.lines()
            .any(|x| x == format!("metalk8s-repos = {rpm_version}")),
        "{pr}"
    );
    let cl = text(&run_ok(
        Command::new("rpm").args(["-qp", "--changelog"]).arg(&sos),
    ));
    assert!(cl.contains("Collect static pod manifests"), "{cl}");

    // Install into an empty root (scriptlets need a /bin/sh in that root, so they are skipped).
    let root = tmp.path().join("installroot");
    std::fs::create_dir_all(&root).unwrap();
    run_ok(
        Command::new("rpm")
            .arg("--root")
            .arg(&root)
            .args(["--nodeps", "--noscripts", "-ivh"])
            .arg(&release)
            .arg(&sos),
    );
    let qa = text(&run_ok(
        Command::new("rpm").arg("--root").arg(&root).arg("-qa"),
    ));
    assert!(
        qa.contains("metalk8s-release-") && qa.contains("metalk8s-sosreport-"),
        "{qa}"
    );
    let repo = std::fs::read_to_string(root.join("etc/yum.repos.d/metalk8s.repo")).unwrap();
    assert!(
        repo.contains(&format!(
            "baseurl=file:///srv/scality/metalk8s-{version}/packages/redhat/8/metalk8s-scality-el8\n"
        )),
        "{repo}"
    );
    assert!(!repo.contains("{{"), "{repo}");
    let key = std::fs::read_to_string(root.join("etc/pki/rpm-gpg/RPM-GPG-KEY-metalk8s")).unwrap();
    assert!(key.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    let conf = root.join("etc/metalk8s/sosreport.conf");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&conf).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    let v = run(Command::new("rpm").arg("--root").arg(&root).args([
        "-V",
        "--nodeps",
        "metalk8s-release",
        "metalk8s-sosreport",
    ]));
    assert!(v.status.success(), "rpm -V: {}", text(&v));
    // The GPG key is also in the repository.
    assert!(scality(&p).join("RPM-GPG-KEY-metalk8s").is_file());
}

fn dnf(installroot: &Path, repo: &Path) -> Command {
    let mut c = Command::new("dnf");
    c.arg("-q")
        .arg(format!("--installroot={}", installroot.display()))
        .args([
            "--setopt=reposdir=/dev/null",
            "--releasever=8",
            "--disablerepo=*",
        ])
        .arg(format!("--repofrompath=local,file://{}", repo.display()))
        .args(["--enablerepo=local", "--setopt=skip_if_unavailable=False"]);
    c
}

#[test]
fn packaging_repo_read_by_dnf() {
    require_tool("dnf");
    let tmp = tempfile::tempdir().unwrap();
    let (p, _) = build(&testkit::workspace_root(), tmp.path());
    let repo = scality(&p);
    let q = run_ok(dnf(&tmp.path().join("dnfroot"), &repo).args([
        "repoquery",
        "--available",
        "--qf",
        "%{name} %{location}",
    ]));
    let mut got: Vec<String> = text(&q).lines().map(str::to_string).collect();
    got.sort();
    let mut want: Vec<String> = ["metalk8s-release", "metalk8s-sosreport"]
        .iter()
        .map(|n| {
            format!(
                "{n} {}",
                rpm_path(&p, n).file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    want.sort();
    assert_eq!(got, want);

    let dest = tmp.path().join("dl");
    run_ok(
        dnf(&tmp.path().join("dnfroot"), &repo)
            .arg("download")
            .arg(format!("--destdir={}", dest.display()))
            .args(["metalk8s-release", "metalk8s-sosreport"]),
    );
    for n in ["metalk8s-release", "metalk8s-sosreport"] {
        let src = rpm_path(&p, n);
        let d = dest.join(src.file_name().unwrap());
        assert_eq!(std::fs::read(&d).unwrap(), std::fs::read(&src).unwrap());
    }
}

/// Loads a repo with createrepo_c's parser and prints every field we care about as JSON.
const DUMP: &str = r#"
import createrepo_c as cr, json, sys
md = cr.Metadata()
md.locate_and_load_xml(sys.argv[1])
out = {}
for k in md.keys():
    p = md.get(k)
    out[p.nevra()] = {
        "pkgId": p.pkgId, "checksum_type": p.checksum_type, "location_href": p.location_href,
        "header": [p.rpm_header_start, p.rpm_header_end],
        "sizes": [p.size_package, p.size_installed, p.size_archive],
        "time_build": p.time_build,
        "text": [p.summary, p.description, p.url, p.rpm_license, p.rpm_vendor, p.rpm_group,
                 p.rpm_buildhost, p.rpm_sourcerpm, p.rpm_packager],
        "provides": p.provides, "requires": p.requires, "conflicts": p.conflicts,
        "obsoletes": p.obsoletes, "suggests": p.suggests, "enhances": p.enhances,
        "recommends": p.recommends, "supplements": p.supplements,
        "files": p.files, "changelogs": p.changelogs,
    }
print(json.dumps(out, sort_keys=True, indent=1))
"#;

fn cr_dump(repo: &Path) -> serde_json::Value {
    let o = run_ok(
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(DUMP)
            .arg(repo),
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A package exercising what the product packages do not: epoch, versioned and pre-requires,
/// conflicts/obsoletes, symlinks, files under bin/, several changelog entries on one date.
fn extra_rpm(dest: &Path) {
    use rpm::{BuildConfig, Dependency, FileOptions, PackageBuilder};
    let mut b = PackageBuilder::new(
        "extra-tool",
        "2.5.1",
        "MIT",
        "x86_64",
        "Extra <test> & more",
    );
    b.using_config(BuildConfig::v4().source_date(1_700_000_000u32));
    b.release("3.el8")
        .epoch(2)
        .description("Line one\nline <two> & \"three\"")
        .requires(Dependency::greater_eq("bash", "4.4"))
        .requires(Dependency::eq("libfoo", "1:2.0-1"))
        .requires(Dependency::any("/bin/sh"))
        .requires(Dependency::any("/usr/bin/extra-tool"))
        .requires(Dependency::script_pre("/usr/sbin/useradd"))
        .provides(Dependency::any("extra(tool)"))
        .conflicts(Dependency::less("old-tool", "1.0"))
        .obsoletes(Dependency::any("legacy-tool"))
        .recommends(Dependency::any("extra-docs"))
        .add_changelog_entry("A <a@x> - 2.5.1-3", "- three", 1_699_920_000u32)
        .add_changelog_entry("B <b@x> - 2.5.1-2  ", "- two", 1_699_920_000u32)
        .add_changelog_entry("C <c@x> - 2.5.1-1", "- one", 1_600_000_000u32);
    b.with_file_contents(
        "#!/bin/sh\necho extra\n",
        FileOptions::new("/usr/bin/extra-tool").permissions(0o755),
    )
    .unwrap()
    .with_file_contents("x=1\n", FileOptions::new("/etc/extra/tool.conf").config())
    .unwrap()
    .with_dir_entry(FileOptions::dir("/etc/extra"))
    .unwrap()
    .with_symlink(FileOptions::symlink("/usr/sbin/extra", "../bin/extra-tool"))
    .unwrap();
    b.build().unwrap().write_file(dest).unwrap();
}

#[test]
fn packaging_repodata_matches_createrepo_c() {
    require_tool("createrepo_c");
    assert!(
        Path::new("/usr/bin/python3").exists(),
        "/usr/bin/python3 (with python3-createrepo-c) is required"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (p, _) = build(&testkit::workspace_root(), tmp.path());
    let ours = scality(&p);
    // Add a richer package in a subdirectory (href must keep the directory) and re-index.
    std::fs::create_dir_all(ours.join("extra")).unwrap();
    extra_rpm(&ours.join("extra/extra-tool-2.5.1-3.el8.x86_64.rpm"));
    let opts = buildchain::packaging::repodata::RepodataOptions {
        revision: 1_700_000_000,
        ..Default::default()
    };
    let out = buildchain::packaging::repodata::write_repodata(&ours, &opts).unwrap();
    assert_eq!(out.packages, 3);
    // repodata files are checksum-prefixed and repomd.xml is deterministic.
    let names: Vec<String> = std::fs::read_dir(ours.join("repodata"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    for kind in ["primary", "filelists", "other"] {
        let f = names
            .iter()
            .find(|n| n.ends_with(&format!("-{kind}.xml.gz")))
            .unwrap();
        let sha = buildchain::fsutil::sha256_file(&ours.join("repodata").join(f)).unwrap();
        assert_eq!(f, &format!("{sha}-{kind}.xml.gz"));
    }

    // createrepo_c on a copy of the same RPMs.
    let theirs = tmp.path().join("theirs");
    for e in walkdir::WalkDir::new(&ours) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(&ours).unwrap();
        if e.file_type().is_file() && rel.extension().is_some_and(|x| x == "rpm") {
            std::fs::create_dir_all(theirs.join(rel).parent().unwrap()).unwrap();
            std::fs::copy(e.path(), theirs.join(rel)).unwrap();
        }
    }
    run_ok(
        Command::new("createrepo_c")
            .args(["--no-database", "-q"])
            .arg(&theirs),
    );
    let a = cr_dump(&ours);
    let b = cr_dump(&theirs);
    assert_eq!(a.as_object().unwrap().len(), 3);
    assert_eq!(b.as_object().unwrap().len(), 3);
    assert!(
        a["extra-tool-2:2.5.1-3.el8.x86_64"]["requires"]
            .as_array()
            .unwrap()
            .len()
            >= 3
    );
    for (nevra, theirs_pkg) in b.as_object().unwrap() {
        let ours_pkg = &a[nevra];
        for (field, v) in theirs_pkg.as_object().unwrap() {
            assert_eq!(
                &ours_pkg[field], v,
                "{nevra}: field {field} differs (ours vs createrepo_c)"
            );
        }
    }
    assert_eq!(
        a["extra-tool-2:2.5.1-3.el8.x86_64"]["location_href"],
        "extra/extra-tool-2.5.1-3.el8.x86_64.rpm"
    );
    // And dnf reads the richer repository too.
    let q = run_ok(dnf(&tmp.path().join("dnfroot"), &ours).args([
        "repoquery",
        "--available",
        "--qf",
        "%{name} %{location}",
        "extra-tool",
    ]));
    assert_eq!(
        text(&q).trim(),
        "extra-tool extra/extra-tool-2.5.1-3.el8.x86_64.rpm"
    );
}

fn tree_bytes(root: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn packaging_two_builds_are_byte_identical() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (pa, fa) = build(&testkit::workspace_root(), a.path());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (pb, fb) = build(&testkit::workspace_root(), b.path());
    assert_eq!(fa.len(), fb.len());
    let ta = tree_bytes(&pa.iso_root);
    let tb = tree_bytes(&pb.iso_root);
    assert!(ta.keys().any(|k| k.ends_with("repomd.xml")));
    assert!(ta.keys().filter(|k| k.ends_with(".rpm")).count() >= 2);
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, v) in &ta {
        assert!(v == &tb[k], "{k} differs between two builds");
    }
    // A rebuild in place rewrites nothing.
    let before: Vec<_> = fa
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .collect();
    let (_, fa2) = build(&testkit::workspace_root(), a.path());
    assert_eq!(fa, fa2);
    let after: Vec<_> = fa2
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .collect();
    assert_eq!(before, after, "an up-to-date rebuild rewrote files");
}

fn copy_tree(src: &Path, dest: &Path) {
    for e in walkdir::WalkDir::new(src) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(src).unwrap();
        if e.file_type().is_dir() {
            std::fs::create_dir_all(dest.join(rel)).unwrap();
        } else {
            std::fs::copy(e.path(), dest.join(rel)).unwrap();
        }
    }
}

#[test]
fn packaging_dropped_package_leaves_the_repo() {
    require_tool("dnf");
    let ws = testkit::workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    let repo_root = tmp.path().join("checkout");
    copy_tree(&ws.join("packages"), &repo_root.join("packages"));
    std::fs::copy(ws.join("VERSION"), repo_root.join("VERSION")).unwrap();
    let build_root = tmp.path().join("_build");
    let (p, _) = build(&repo_root, &build_root);
    let sos = rpm_path(&p, "metalk8s-sosreport");
    std::fs::remove_file(repo_root.join("packages/redhat/8/metalk8s-sosreport.yaml")).unwrap();
    let s = settings(&repo_root, &build_root);
    let tasks = buildchain::tasks::packaging::tasks(&s).unwrap();
    assert!(!tasks.iter().any(|t| t.name.contains("sosreport")));
    let (p, _) = build(&repo_root, &build_root);
    assert!(!sos.exists(), "{} still in the repo", sos.display());
    let q = run_ok(dnf(&tmp.path().join("dnfroot"), &scality(&p)).args([
        "repoquery",
        "--available",
        "--qf",
        "%{name}",
    ]));
    assert_eq!(text(&q).trim(), "metalk8s-release");
}

#[test]
fn packaging_task_graph() {
    let tmp = tempfile::tempdir().unwrap();
    let s = settings(&testkit::workspace_root(), tmp.path());
    let tasks = buildchain::tasks::packaging::tasks(&s).unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    for n in [
        "packaging",
        "packaging:metalk8s-release/rpm",
        "packaging:metalk8s-sosreport/rpm",
        "packaging:scality/repodata",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let group = tasks.iter().find(|t| t.name == "packaging").unwrap();
    assert!(group.public);
    assert_eq!(group.deps.len(), tasks.len() - 1);
    let repodata = tasks
        .iter()
        .find(|t| t.name == "packaging:scality/repodata")
        .unwrap();
    assert!(repodata
        .deps
        .contains(&"packaging:metalk8s-release/rpm".to_string()));
}

#[test]
fn packaging_definition_errors_name_file_line_col() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("bad.yaml");
    std::fs::write(
        &f,
        "name: bad\nversion: '1'\nrelease: '1'\narch: noarch\nsummary: s\nlicense: MIT\nfiles:\n  - dest: /etc/x\n    content: x\n    owner: root\n",
    )
    .unwrap();
    let e = format!(
        "{:#}",
        buildchain::packaging::spec::load_definition(&f).unwrap_err()
    );
    // `owner:` is line 10, column 5.
    assert!(
        e.starts_with(&format!("{}:10:5: unknown field `owner`", f.display())),
        "{e}"
    );

    std::fs::write(
        &f,
        "name: bad\nversion: '1'\nrelease: '1'\narch: noarch\nsummary: s\nlicense: MIT\nfiles:\n  - dest: /etc/x\n    src: missing.txt\n",
    )
    .unwrap();
    let e = format!(
        "{:#}",
        buildchain::packaging::spec::load_definition(&f).unwrap_err()
    );
    assert!(
        e.contains("bad.yaml:9:") && e.contains("missing.txt"),
        "{e}"
    );
}

/// Copies `bins` (and the shared libraries `ldd` lists for them) into `root`, so rpm can run
/// scriptlets chrooted there.
fn seed_root_with(root: &Path, bins: &[&str]) {
    require_tool("ldd");
    for b in bins {
        let src = Path::new("/bin").join(b);
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(&src, root.join("bin").join(b)).unwrap();
        let l = run_ok(Command::new("ldd").arg(&src));
        for lib in text(&l).split_whitespace().filter(|w| w.starts_with('/')) {
            let dest = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dest).unwrap();
        }
    }
}

#[test]
fn packaging_scriptlets_run_on_install_and_erase() {
    require_tool("rpm");
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "rpm runs scriptlets chrooted into --root, which needs root: run the tests as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (p, _) = build(&testkit::workspace_root(), tmp.path());
    let sos = rpm_path(&p, "metalk8s-sosreport");
    let root = tmp.path().join("installroot");
    seed_root_with(&root, &["sh", "mkdir", "rm"]);
    let i = run_ok(
        Command::new("rpm")
            .arg("--root")
            .arg(&root)
            .args(["--nodeps", "-ivv"])
            .arg(&sos),
    );
    let log = String::from_utf8_lossy(&i.stderr).to_string();
    for step in ["%prein(", "%post("] {
        let line = log
            .lines()
            .find(|l| l.contains(step) && l.contains("waitpid"))
            .unwrap_or_else(|| panic!("no {step} scriptlet run in\n{log}"));
        assert!(line.ends_with("status 0"), "{line}");
    }
    assert!(root.join("var/log/metalk8s/sosreport").is_dir());
    let e = run_ok(Command::new("rpm").arg("--root").arg(&root).args([
        "--nodeps",
        "-evv",
        "metalk8s-sosreport",
    ]));
    let log = String::from_utf8_lossy(&e.stderr).to_string();
    let line = log
        .lines()
        .find(|l| l.contains("%postun(") && l.contains("waitpid"))
        .unwrap_or_else(|| panic!("no %postun scriptlet run in\n{log}"));
    assert!(line.ends_with("status 0"), "{line}");
    assert!(!root.join("var/log/metalk8s/sosreport").exists());
}
