//! Issue 16 (items 1–2): a signed build, checked by the tools that will check it in the field —
//! `gpg --verify` on `CONTENTS.json.asc` and every `repomd.xml.asc`, `rpm -K` after
//! `rpm --import`, `dnf --installroot … install` with `gpgcheck=1 repo_gpgcheck=1` (and its
//! refusal of a tampered RPM or repomd.xml), `pyspdxtools -i` on the SBOM. Also: a
//! passphrase-protected key, and an unsigned build that says it is unsigned.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use buildchain::trust::contents::ContentIndex;
use testkit::{require_tool, run, run_ok};

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");
const SDE: &str = "1700000000";
const REPO: &str = "_build/root/packages/redhat/8/metalk8s-scality-el8";

/// A throwaway OpenPGP key made by gpg in its own GNUPGHOME (agent stopped on drop).
struct GpgKey {
    home: tempfile::TempDir,
    secret: PathBuf,
    public: PathBuf,
    fingerprint: String,
}

impl GpgKey {
    fn new(passphrase: &str) -> Self {
        require_tool("gpg");
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        let mut key = GpgKey {
            secret: home.path().join("secret.asc"),
            public: home.path().join("public.asc"),
            fingerprint: String::new(),
            home,
        };
        let pp = ["--pinentry-mode", "loopback", "--passphrase", passphrase];
        run_ok(key.gpg().args(pp).args([
            "--quick-gen-key",
            "Buildchain Test <test@example.invalid>",
            "default",
            "default",
            "never",
        ]));
        let sec = run_ok(key.gpg().args(pp).args(["--armor", "--export-secret-keys"]));
        std::fs::write(&key.secret, &sec.stdout).unwrap();
        let public = run_ok(key.gpg().args(["--armor", "--export"]));
        std::fs::write(&key.public, &public.stdout).unwrap();
        let list = run_ok(key.gpg().args(["--with-colons", "--list-keys"]));
        let fpr = String::from_utf8_lossy(&list.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .unwrap();
        key.fingerprint = fpr;
        key
    }

    fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path()).arg("--batch");
        c
    }

    /// The 16-hex key id (the key signs with its primary key).
    fn key_id(&self) -> String {
        self.fingerprint[self.fingerprint.len() - 16..].to_string()
    }
}

impl Drop for GpgKey {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

/// A scratch checkout with one dependency-free package dnf can install into an empty root.
fn checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    testkit::copy_product_repo(dir.path());
    std::fs::write(
        dir.path().join("packages/redhat/8/trust-probe.yaml"),
        "name: trust-probe\nversion: \"1.0\"\nrelease: \"1{{ dist }}\"\narch: noarch\n\
         summary: probe\nlicense: \"ASL 2.0\"\nfiles:\n  - content: \"probe\\n\"\n    \
         dest: /opt/trust-probe\n",
    )
    .unwrap();
    dir
}

fn build(repo: &Path, store: &Path, args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("--repo")
        .arg(repo)
        .arg("--no-progress")
        .args(args)
        .env("SOURCE_DATE_EPOCH", SDE)
        .env("BUILDCHAIN_STORE", store)
        .env_remove("BUILD_ROOT")
        .env_remove("PROJECT_NAME")
        .env_remove("BUILD_HOST")
        .env_remove("BUILDCHAIN_SIGNING_KEY")
        .env_remove("BUILDCHAIN_SIGNING_PASSPHRASE_FILE");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "build failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn rpms(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rpm"))
        .collect();
    v.sort();
    v
}

fn dnf_install(installroot: &Path, repo: &Path, reposdir: &Path) -> Output {
    std::fs::create_dir_all(reposdir).unwrap();
    std::fs::write(
        reposdir.join("iso.repo"),
        format!(
            "[iso]\nname=iso\nbaseurl=file://{r}\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=1\n\
             gpgkey=file://{r}/RPM-GPG-KEY-metalk8s\n",
            r = repo.display()
        ),
    )
    .unwrap();
    run(Command::new("dnf")
        .args(["-y", "--noplugins", "--releasever=8"])
        .arg(format!("--installroot={}", installroot.display()))
        .arg(format!("--setopt=reposdir={}", reposdir.display()))
        .args([
            "--setopt=skip_if_unavailable=False",
            "install",
            "trust-probe",
        ]))
}

fn gpg_verify(key: &GpgKey, file: &Path) {
    let mut asc = file.as_os_str().to_owned();
    asc.push(".asc");
    let o = run(key.gpg().arg("--verify").arg(&asc).arg(file));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("Good signature from \"Buildchain Test"),
        "gpg --verify {}: {err}",
        file.display()
    );
}

#[test]
fn signed_iso_passes_gpg_rpm_dnf_and_pyspdxtools() {
    for t in ["rpm", "dnf", "pyspdxtools", "gpgconf"] {
        require_tool(t);
    }
    let key = GpgKey::new("");
    let co = checkout();
    let store = tempfile::tempdir().unwrap();
    let out = ok(build(
        co.path(),
        store.path(),
        &["--signing-key", key.secret.to_str().unwrap()],
        &[],
    ));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("unsigned build"),
        "a signed build must not call itself unsigned"
    );
    let root = co.path().join("_build/root");
    let repo = co.path().join(REPO);

    // The content index and every repomd.xml verify with the public key.
    gpg_verify(&key, &root.join("CONTENTS.json"));
    gpg_verify(&key, &repo.join("repodata/repomd.xml"));

    // rpm -K after rpm --import: digests and signatures OK for every RPM built here.
    let db = tempfile::tempdir().unwrap();
    let dbpath = format!("--dbpath={}", db.path().display());
    run_ok(
        Command::new("rpm")
            .arg(&dbpath)
            .arg("--import")
            .arg(&key.public),
    );
    let list = rpms(&repo);
    assert_eq!(list.len(), 3, "{list:?}");
    for r in &list {
        let o = run_ok(Command::new("rpm").arg(&dbpath).arg("-K").arg(r));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("{}: digests signatures OK", r.display())
        );
    }
    // The shipped key is the signing key; the .repo file checks signatures.
    let shown = run_ok(
        key.gpg()
            .args(["--show-keys", "--with-colons"])
            .arg(repo.join("RPM-GPG-KEY-metalk8s")),
    );
    let first_fpr = String::from_utf8_lossy(&shown.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|r| r.trim_matches(':').to_string())
        });
    assert_eq!(first_fpr.as_deref(), Some(key.fingerprint.as_str()));
    let x = tempfile::tempdir().unwrap();
    let release = list
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("metalk8s-release-")
        })
        .unwrap();
    run_ok(
        Command::new("sh")
            .current_dir(x.path())
            .arg("-c")
            .arg(format!("rpm2cpio '{}' | bsdtar -xf -", release.display())),
    );
    let repo_file =
        std::fs::read_to_string(x.path().join("etc/yum.repos.d/metalk8s.repo")).unwrap();
    assert!(
        repo_file.contains("\ngpgcheck=1\nrepo_gpgcheck=1\n"),
        "{repo_file}"
    );
    assert_eq!(
        std::fs::read(x.path().join("etc/pki/rpm-gpg/RPM-GPG-KEY-metalk8s")).unwrap(),
        std::fs::read(repo.join("RPM-GPG-KEY-metalk8s")).unwrap()
    );

    // The index names every RPM with the key that signed it.
    let index =
        ContentIndex::from_json_slice(&std::fs::read(root.join("CONTENTS.json")).unwrap()).unwrap();
    assert_eq!(index.rpms.len(), 3);
    for r in &index.rpms {
        assert_eq!(
            r.key_id.as_deref(),
            Some(key.key_id().as_str()),
            "{}",
            r.path
        );
    }
    assert_eq!(index.source_date_epoch, Some(1_700_000_000));
    assert_eq!(index.product["BUILD_HOST"], "buildchain");
    assert!(index.files.iter().any(|f| f.path == "sbom.spdx.json"));
    assert!(index.files.iter().any(|f| f.path == "SHA256SUMS"));
    assert!(!index
        .files
        .iter()
        .any(|f| f.path.starts_with("CONTENTS.json")));
    let sums = std::fs::read_to_string(root.join("SHA256SUMS")).unwrap();
    assert!(!sums.contains("CONTENTS.json"), "{sums}");
    assert!(sums.contains("  ./sbom.spdx.json\n"), "{sums}");

    // The SBOM validates, at the root and beside the ISO.
    for sbom in [
        root.join("sbom.spdx.json"),
        co.path().join("dist/metalk8s-130.0.0-dev.spdx.json"),
    ] {
        let o = run(Command::new("pyspdxtools").arg("-i").arg(&sbom));
        assert!(
            o.status.success(),
            "pyspdxtools -i {}: {}{}",
            sbom.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let sbom = std::fs::read_to_string(root.join("sbom.spdx.json")).unwrap();
    assert!(
        sbom.contains("\"referenceLocator\": \"pkg:oci/pause@sha256%3A"),
        "{sbom}"
    );
    assert!(
        sbom.contains(
            "\"referenceLocator\": \"pkg:rpm/metalk8s/trust-probe@1.0-1.el8?arch=noarch\""
        ),
        "{sbom}"
    );
    assert!(sbom.contains("\"extractedText\": \"ASL 2.0\""), "{sbom}");

    // dnf installs with gpgcheck=1 repo_gpgcheck=1 from the repository as built…
    let tmp = tempfile::tempdir().unwrap();
    let o = dnf_install(
        &tmp.path().join("root-ok"),
        &repo,
        &tmp.path().join("repos-ok"),
    );
    assert!(
        o.status.success(),
        "dnf install: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(tmp.path().join("root-ok/opt/trust-probe").is_file());

    // …refuses an unsigned RPM even in repodata that is correctly signed…
    let unsigned_co = checkout();
    ok(build(unsigned_co.path(), store.path(), &[], &[]));
    let swapped = tmp.path().join("repo-unsigned");
    testkit::copy_tree(&repo, &swapped);
    let probe_name = rpms(&repo)
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("trust-probe-")
        })
        .unwrap();
    let probe_name = probe_name.file_name().unwrap();
    std::fs::copy(
        unsigned_co.path().join(REPO).join(probe_name),
        swapped.join(probe_name),
    )
    .unwrap();
    run_ok(
        Command::new(BIN)
            .args(["packaging", "repodata"])
            .arg(&swapped)
            .env("SOURCE_DATE_EPOCH", SDE),
    );
    let repomd = swapped.join("repodata/repomd.xml");
    // (our repodata writer drops the now stale repomd.xml.asc itself)
    assert!(!swapped.join("repodata/repomd.xml.asc").exists());
    run_ok(
        key.gpg()
            .args(["--armor", "--detach-sign", "--output"])
            .arg(swapped.join("repodata/repomd.xml.asc"))
            .arg(&repomd),
    );
    gpg_verify(&key, &repomd);
    let o = dnf_install(
        &tmp.path().join("root-unsigned"),
        &swapped,
        &tmp.path().join("repos-unsigned"),
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "dnf installed an unsigned RPM: {all}");
    assert!(
        all.contains("trust-probe-1.0-1.el8.noarch.rpm is not signed"),
        "{all}"
    );

    // …and refuses a tampered RPM, and a tampered repomd.xml.
    for (what, tamper) in [("rpm", 0), ("repomd.xml", 1)] {
        let copy = tmp.path().join(format!("repo-{what}"));
        testkit::copy_tree(&repo, &copy);
        if tamper == 0 {
            let probe = rpms(&copy)
                .into_iter()
                .find(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("trust-probe-")
                })
                .unwrap();
            let mut b = std::fs::read(&probe).unwrap();
            let n = b.len();
            b[n - 1] ^= 1;
            std::fs::write(&probe, b).unwrap();
        } else {
            let m = copy.join("repodata/repomd.xml");
            let mut b = std::fs::read(&m).unwrap();
            b.extend_from_slice(b"<!-- tampered -->\n");
            std::fs::write(&m, b).unwrap();
        }
        let o = dnf_install(
            &tmp.path().join(format!("root-{what}")),
            &copy,
            &tmp.path().join(format!("repos-{what}")),
        );
        assert!(
            !o.status.success(),
            "dnf installed from a repository with a tampered {what}"
        );
        assert!(!tmp
            .path()
            .join(format!("root-{what}/opt/trust-probe"))
            .exists());
    }
}

#[test]
fn passphrase_protected_key_signs_and_a_wrong_passphrase_is_refused() {
    require_tool("rpm");
    let key = GpgKey::new("s3cret phrase");
    let co = checkout();
    let store = tempfile::tempdir().unwrap();
    let pass = co.path().join("pass.txt");

    // Wrong passphrase: a configuration error naming the key file, and nothing built.
    std::fs::write(&pass, "wrong\n").unwrap();
    let o = build(
        co.path(),
        store.path(),
        &[],
        &[
            ("BUILDCHAIN_SIGNING_KEY", &key.secret),
            ("BUILDCHAIN_SIGNING_PASSPHRASE_FILE", &pass),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}: cannot sign with key ", key.secret.display())),
        "{err}"
    );
    assert!(!co.path().join("_build/root").exists());

    // The right passphrase (from the file's first line) signs.
    std::fs::write(&pass, "s3cret phrase\n").unwrap();
    ok(build(
        co.path(),
        store.path(),
        &[],
        &[
            ("BUILDCHAIN_SIGNING_KEY", &key.secret),
            ("BUILDCHAIN_SIGNING_PASSPHRASE_FILE", &pass),
        ],
    ));
    gpg_verify(&key, &co.path().join("_build/root/CONTENTS.json"));
    let db = tempfile::tempdir().unwrap();
    let dbpath = format!("--dbpath={}", db.path().display());
    run_ok(
        Command::new("rpm")
            .arg(&dbpath)
            .arg("--import")
            .arg(&key.public),
    );
    for r in rpms(&co.path().join(REPO)) {
        let o = run_ok(Command::new("rpm").arg(&dbpath).arg("-K").arg(&r));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("{}: digests signatures OK", r.display())
        );
    }
}

#[test]
fn unsigned_build_says_so_and_ships_no_signatures() {
    require_tool("rpm");
    let co = checkout();
    let store = tempfile::tempdir().unwrap();
    let out = ok(build(co.path(), store.path(), &[], &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "populate_iso:unsigned: unsigned build (set --signing-key or BUILDCHAIN_SIGNING_KEY to sign)"
        ),
        "{stderr}"
    );
    let root = co.path().join("_build/root");
    assert!(root.join("CONTENTS.json").is_file());
    assert!(!root.join("CONTENTS.json.asc").exists());
    assert!(!co
        .path()
        .join(REPO)
        .join("repodata/repomd.xml.asc")
        .exists());
    let index =
        ContentIndex::from_json_slice(&std::fs::read(root.join("CONTENTS.json")).unwrap()).unwrap();
    assert!(index.rpms.iter().all(|r| r.key_id.is_none()));
    let o = run_ok(
        Command::new("rpm")
            .arg("-qp")
            .arg("--qf")
            .arg("%{SIGPGP:pgpsig}\n")
            .arg(rpms(&co.path().join(REPO))[0].clone()),
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "(none)");
}

#[test]
fn signed_solution_isos_carry_a_signed_index_and_an_sbom() {
    for t in ["bsdtar", "pyspdxtools", "gpgconf"] {
        require_tool(t);
    }
    let key = GpgKey::new("");
    let co = checkout();
    let store = tempfile::tempdir().unwrap();
    ok(build(
        co.path(),
        store.path(),
        &["solutions", "--signing-key", key.secret.to_str().unwrap()],
        &[],
    ));
    let dist = co.path().join("dist/solutions");
    let isos: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dist)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "iso"))
            .collect();
        v.sort();
        v
    };
    assert!(!isos.is_empty());
    for iso in isos {
        let x = tempfile::tempdir().unwrap();
        run_ok(
            Command::new("bsdtar")
                .arg("-xf")
                .arg(&iso)
                .arg("-C")
                .arg(x.path()),
        );
        gpg_verify(&key, &x.path().join("CONTENTS.json"));
        for sbom in [
            x.path().join("sbom.spdx.json"),
            iso.with_extension("spdx.json"),
        ] {
            let o = run(Command::new("pyspdxtools").arg("-i").arg(&sbom));
            assert!(
                o.status.success(),
                "pyspdxtools -i {}: {o:?}",
                sbom.display()
            );
        }
        // Every file of the ISO but the index and its signature is in the index, with its
        // size and sha256, and nothing else is.
        let index =
            ContentIndex::from_json_slice(&std::fs::read(x.path().join("CONTENTS.json")).unwrap())
                .unwrap();
        let mut on_disk = Vec::new();
        for e in walkdir::WalkDir::new(x.path()).sort_by_file_name() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(x.path())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().is_file() && !rel.starts_with("CONTENTS.json") {
                on_disk.push((
                    rel,
                    e.metadata().unwrap().len(),
                    buildchain::fsutil::sha256_file(e.path()).unwrap(),
                ));
            }
        }
        let listed: Vec<(String, u64, String)> = index
            .files
            .iter()
            .map(|f| (f.path.clone(), f.size, f.sha256.clone()))
            .collect();
        assert_eq!(listed, on_disk, "{}", iso.display());
        assert!(!index.images.is_empty());
        for img in &index.images {
            assert!(img.digest.starts_with("sha256:"));
            assert_eq!(
                img.platforms,
                vec!["linux/amd64".to_string()],
                "{}",
                img.name
            );
            for b in &img.blobs {
                let hex = b.digest.strip_prefix("sha256:").unwrap();
                let p = x
                    .path()
                    .join("images")
                    .join(&img.name)
                    .join(&img.tag)
                    .join(hex);
                assert_eq!(
                    std::fs::metadata(&p).unwrap().len(),
                    b.size,
                    "{}",
                    p.display()
                );
            }
        }
        assert_eq!(index.product["name"], "example-solution");
    }
}

#[test]
fn a_signing_key_that_is_not_a_secret_key_is_a_usage_error_naming_the_file() {
    let co = checkout();
    let store = tempfile::tempdir().unwrap();
    let bad = co.path().join("not-a-key.asc");
    std::fs::write(&bad, "hello\n").unwrap();
    let o = build(
        co.path(),
        store.path(),
        &[],
        &[("BUILDCHAIN_SIGNING_KEY", &bad)],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "BUILDCHAIN_SIGNING_KEY: {}: not an armored OpenPGP secret key",
            bad.display()
        )),
        "{err}"
    );
    assert!(!co.path().join("_build/root").exists());
}
