//! Issue 13: `publish` pushes a built ISO with its SBOM and content index as one OCI artifact
//! to a real `docker-registry` (TLS from a test CA, htpasswd auth); `skopeo` reads the manifest;
//! `pull` gets byte-identical files back and refuses a tampered blob, leaving nothing behind.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");
const ISO: &str = "metalk8s-130.0.0-dev.iso";
const SBOM: &str = "metalk8s-130.0.0-dev.spdx.json";

fn run(repo: &Path, store: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("--repo")
        .arg(repo)
        .arg("--no-progress")
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("BUILD_HOST", "ci")
        .env("BUILDCHAIN_STORE", store)
        .env_remove("BUILD_ROOT")
        .env_remove("PROJECT_NAME")
        .env_remove("BUILDCHAIN_REMOTE_CACHE")
        .env_remove("BUILDCHAIN_REMOTE_CACHE_CA");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn sha256(p: &Path) -> String {
    buildchain::fsutil::sha256_file(p).unwrap()
}

#[test]
fn publish_and_pull_an_iso_artifact_verified() {
    let reg = testkit::start_docker_registry_tls();
    let repo = tempfile::tempdir().unwrap();
    testkit::copy_product_repo(repo.path());
    let store = tempfile::tempdir().unwrap();
    ok(run(repo.path(), store.path(), &[], &[]), "build");
    let dist = repo.path().join("dist");
    let iso = dist.join(ISO);
    let sbom = dist.join(SBOM);

    // The content index, extracted from the ISO by a real tool.
    let bsdtar = testkit::require_tool("bsdtar");
    let contents = testkit::run_ok(
        Command::new(&bsdtar)
            .arg("-xOf")
            .arg(&iso)
            .arg("CONTENTS.json"),
    )
    .stdout;
    assert!(contents.starts_with(b"{"));

    let creds = tempfile::tempdir().unwrap();
    let auth = creds.path().join("auth.json");
    std::fs::write(&auth, reg.auth_json()).unwrap();
    let ca = reg.ca.display().to_string();
    // Chunks of 64 KiB: the ISO goes through POST, PATCH…, PUT.
    let env = vec![
        ("REGISTRY_AUTH_FILE", auth.display().to_string()),
        (
            "BUILDCHAIN_REMOTE_CACHE_CHUNK_BYTES",
            (64u64 << 10).to_string(),
        ),
    ];
    let target = format!("oci://{}/dist/metalk8s:130.0.0-dev", reg.host());
    let out = ok(
        run(
            repo.path(),
            store.path(),
            &["publish", &target, "--ca", &ca],
            &env,
        ),
        "publish",
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let iso_sha = sha256(&iso);
    let sbom_sha = sha256(&sbom);
    let contents_sha = buildchain::fsutil::sha256_bytes(&contents);
    assert!(
        stdout.contains(&format!(
            "pushed {ISO} sha256:{iso_sha} ({} bytes)\n",
            std::fs::metadata(&iso).unwrap().len()
        )),
        "{stdout}"
    );
    assert!(
        std::fs::metadata(&iso).unwrap().len() > 3 * (64 << 10),
        "the ISO must span several chunks"
    );

    // skopeo reads the manifest over TLS with the test CA and the credentials.
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(&reg.ca, certs.path().join("ca.crt")).unwrap();
    let skopeo = testkit::require_tool("skopeo");
    let (user, pass) = &reg.user;
    let raw = testkit::run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--raw", "--tls-verify=true", "--cert-dir"])
            .arg(certs.path())
            .arg("--creds")
            .arg(format!("{user}:{pass}"))
            .arg(format!("docker://{}/dist/metalk8s:130.0.0-dev", reg.host())),
    )
    .stdout;
    let digest = format!("sha256:{}", buildchain::fsutil::sha256_bytes(&raw));
    assert_eq!(
        stdout.lines().last().unwrap(),
        format!("published {target} {digest}")
    );
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["artifactType"], "application/vnd.buildchain.iso.v1");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(
        m["config"]["digest"],
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    let layers: Vec<(String, String, String)> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["annotations"]["org.opencontainers.image.title"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                l["digest"].as_str().unwrap().to_string(),
                l["mediaType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        layers,
        vec![
            (
                ISO.to_string(),
                format!("sha256:{iso_sha}"),
                "application/vnd.buildchain.iso.v1.iso9660".to_string()
            ),
            (
                SBOM.to_string(),
                format!("sha256:{sbom_sha}"),
                "application/spdx+json".to_string()
            ),
            (
                "CONTENTS.json".to_string(),
                format!("sha256:{contents_sha}"),
                "application/vnd.buildchain.contents.v1+json".to_string()
            ),
        ]
    );

    // pull (by tag, then by digest) gets byte-identical files back.
    let env_pull = vec![
        ("REGISTRY_AUTH_FILE", auth.display().to_string()),
        ("BUILDCHAIN_REMOTE_CACHE_CA", ca.clone()),
    ];
    let work = tempfile::tempdir().unwrap();
    for (i, src) in [
        target.clone(),
        format!("oci://{}/dist/metalk8s@{digest}", reg.host()),
    ]
    .iter()
    .enumerate()
    {
        let out_dir = work.path().join(format!("pulled{i}"));
        ok(
            run(
                repo.path(),
                store.path(),
                &["pull", src, "-o", out_dir.to_str().unwrap()],
                &env_pull,
            ),
            "pull",
        );
        let mut names: Vec<String> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["CONTENTS.json", ISO, SBOM]);
        assert_eq!(
            std::fs::read(out_dir.join(ISO)).unwrap(),
            std::fs::read(&iso).unwrap()
        );
        assert_eq!(
            std::fs::read(out_dir.join(SBOM)).unwrap(),
            std::fs::read(&sbom).unwrap()
        );
        assert_eq!(
            std::fs::read(out_dir.join("CONTENTS.json")).unwrap(),
            contents
        );
    }

    // A tampered blob (same size) in the registry storage: pull fails naming the digest and
    // leaves no output (a missing directory stays missing, an existing one stays empty).
    let data = reg.blob_data(&sbom_sha);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&data, &bytes).unwrap();
    let missing = work.path().join("never");
    let o = run(
        repo.path(),
        store.path(),
        &["pull", &target, "-o", missing.to_str().unwrap()],
        &env_pull,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let got = buildchain::fsutil::sha256_bytes(&bytes);
    assert_eq!(
        err.trim_end(),
        format!(
            "error: {target}: blob sha256:{sbom_sha} ({SBOM}) does not verify: got sha256:{got}, {} bytes (expected {}); refused",
            bytes.len(),
            bytes.len()
        )
    );
    assert!(!missing.exists());
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = run(
        repo.path(),
        store.path(),
        &["pull", &target, "-o", empty.to_str().unwrap()],
        &env_pull,
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

    // A tag needs credentials: without them, a clear error.
    let o = run(
        repo.path(),
        store.path(),
        &["pull", &target, "-o", empty.to_str().unwrap()],
        &[
            ("BUILDCHAIN_REMOTE_CACHE_CA", ca.clone()),
            ("REGISTRY_AUTH_FILE", "/nonexistent/auth.json".to_string()),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

    reg.garbage_collect_dry_run();
}
