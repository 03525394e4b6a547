//! Issue 13, task results: a runner records the results of its cacheable tasks (RPM builds,
//! repodata, Solution ISOs, local image builds) in a real `docker-registry` (TLS from a test CA,
//! htpasswd auth) as `task-<key>` artifact manifests; a fresh runner (separate checkout, empty
//! store and build root) takes them "from remote cache" and builds the same ISOs; a poisoned
//! record (a layer blob replaced, another deleted) gives warnings and the task runs locally.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use crate::remote_cache::{sha256, warnings, Runner, ISO};

impl Runner {
    /// Builds the ISO and the Solutions with the JSON reporter; returns task → status, and
    /// the output.
    fn build(&self, env: &[(&str, String)]) -> (BTreeMap<String, String>, Output) {
        let out = self.ok(&["--reporter", "json", "solutions", "iso"], env);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        // Informational (no timed assertion): `--nocapture` shows it.
        eprintln!("build took {:.2}s", doc["duration_s"].as_f64().unwrap());
        for t in doc["tasks"].as_array().unwrap() {
            if t["duration_s"].as_f64().unwrap() > 0.3 {
                eprintln!(
                    "  {} {} {:.2}s",
                    t["name"],
                    t["status"],
                    t["duration_s"].as_f64().unwrap()
                );
            }
        }
        let statuses = doc["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_string(),
                    t["status"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (statuses, out)
    }

    fn info(&self, task: &str, env: &[(&str, String)]) -> String {
        String::from_utf8(self.ok(&["info", task], env).stdout).unwrap()
    }

    /// sha256 of the product ISO and of every Solution ISO.
    fn isos(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert(
            ISO.to_string(),
            sha256(&self.dir.path().join("dist").join(ISO)),
        );
        let sol = self.dir.path().join("dist/solutions");
        for e in std::fs::read_dir(&sol).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "iso") {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                out.insert(name, sha256(&p));
            }
        }
        out
    }
}

fn cacheable(name: &str) -> bool {
    (name.starts_with("packaging:") && (name.ends_with("/rpm") || name.ends_with("/repodata")))
        || name.starts_with("solutions:")
}

/// Every `task-*` record in the registry storage: task name → (tag, manifest).
fn records(cache: &testkit::TlsRegistry) -> BTreeMap<String, (String, Value)> {
    let repo = cache
        .storage
        .join("docker/registry/v2/repositories/buildchain/cache/_manifests/tags");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&repo).unwrap() {
        let tag = e.unwrap().file_name().to_string_lossy().into_owned();
        if !tag.starts_with("task-") {
            continue;
        }
        let link = std::fs::read_to_string(repo.join(&tag).join("current/link")).unwrap();
        let hex = link.trim().strip_prefix("sha256:").unwrap();
        let m: Value =
            serde_json::from_slice(&std::fs::read(cache.blob_data(hex)).unwrap()).unwrap();
        let task = m["annotations"]["org.buildchain.task"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(out.insert(task, (tag, m)).is_none(), "one record per task");
    }
    out
}

#[test]
fn task_results_come_from_the_remote_cache_and_poisoned_records_run_locally() {
    let cache = testkit::start_docker_registry_tls();
    let creds = tempfile::tempdir().unwrap();
    let auth = creds.path().join("auth.json");
    std::fs::write(&auth, cache.auth_json()).unwrap();
    let cache_url = format!("oci://{}/buildchain/cache", cache.host());
    let env = vec![
        ("BUILDCHAIN_REMOTE_CACHE", cache_url.clone()),
        ("BUILDCHAIN_REMOTE_CACHE_CA", cache.ca.display().to_string()),
        ("REGISTRY_AUTH_FILE", auth.display().to_string()),
    ];

    // Runner A: empty cache, every cacheable task runs and is recorded.
    let a = Runner::new();
    let (sa, oa) = a.build(&env);
    assert_eq!(warnings(&oa), Vec::<String>::new());
    let wanted: Vec<String> = sa.keys().filter(|n| cacheable(n)).cloned().collect();
    assert!(wanted.iter().any(|n| n.ends_with("/rpm")), "{sa:?}");
    assert!(wanted.iter().any(|n| n.ends_with("/repodata")), "{sa:?}");
    assert!(wanted.iter().any(|n| n.starts_with("solutions:")), "{sa:?}");
    let isos = a.isos();
    let recs = records(&cache);
    for n in &wanted {
        assert!(recs.contains_key(n), "no record for {n}: {:?}", recs.keys());
    }
    // Besides: the local image builds (images:metalk8s-utils is built from images/).
    let expected: Vec<String> = recs.keys().cloned().collect();
    assert!(
        expected.contains(&"images:metalk8s-utils".to_string()),
        "{expected:?}"
    );
    for n in &expected {
        assert_eq!(sa[n], "success", "{n}");
    }

    // skopeo reads a record: an OCI artifact manifest of the task artifact type.
    let rpm_task = expected
        .iter()
        .find(|n| n.ends_with("/rpm"))
        .unwrap()
        .clone();
    let (rpm_tag, rpm_rec) = recs[&rpm_task].clone();
    assert_eq!(rpm_tag.len(), "task-".len() + 64);
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(&cache.ca, certs.path().join("ca.crt")).unwrap();
    let (user, pass) = &cache.user;
    let raw = testkit::run_ok(
        Command::new(testkit::require_tool("skopeo"))
            .args(["inspect", "--raw", "--tls-verify=true", "--cert-dir"])
            .arg(certs.path())
            .arg("--creds")
            .arg(format!("{user}:{pass}"))
            .arg(format!(
                "docker://{}/buildchain/cache:{rpm_tag}",
                cache.host()
            )),
    )
    .stdout;
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m, rpm_rec);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["artifactType"], "application/vnd.buildchain.task.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{m}");
    let rpm_title = layers[0]["annotations"]["org.opencontainers.image.title"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        rpm_title.starts_with("build/") && rpm_title.ends_with(".rpm"),
        "{rpm_title}"
    );
    let rpm_path = rpm_title.strip_prefix("build/").unwrap().to_string();
    assert_eq!(
        layers[0]["digest"].as_str().unwrap(),
        format!(
            "sha256:{}",
            sha256(&a.dir.path().join("_build").join(&rpm_path))
        )
    );

    // Runner B: separate checkout, empty store and build root: the cacheable tasks come from
    // the cache, and the ISOs are the same.
    let b = Runner::new();
    let (sb, ob) = b.build(&env);
    assert_eq!(warnings(&ob), Vec::<String>::new());
    for n in &expected {
        assert_eq!(sb[n], "cached", "{n}");
    }
    assert_eq!(b.isos(), isos);
    let info = b.info(&rpm_task, &env);
    assert!(
        info.lines()
            .any(|l| l == "  status: up-to-date (from remote cache)"),
        "{info}"
    );

    // Poison: the RPM's blob replaced (same size) in the registry storage, and the blob of the
    // repodata record's repomd.xml deleted.
    let rpm_hex = layers[0]["digest"].as_str().unwrap()[7..].to_string();
    let data = cache.blob_data(&rpm_hex);
    let mut bytes = std::fs::read(&data).unwrap();
    for x in bytes.iter_mut() {
        *x = !*x;
    }
    std::fs::write(&data, &bytes).unwrap();
    let poisoned = buildchain::fsutil::sha256_bytes(&bytes);
    let repo_task = expected
        .iter()
        .find(|n| n.ends_with("/repodata"))
        .unwrap()
        .clone();
    let (repo_tag, repo_rec) = recs[&repo_task].clone();
    let repomd = repo_rec["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .unwrap()
                .ends_with("repodata/repomd.xml")
        })
        .unwrap()
        .clone();
    let repomd_hex = repomd["digest"].as_str().unwrap()[7..].to_string();
    let repomd_path = repomd["annotations"]["org.opencontainers.image.title"]
        .as_str()
        .unwrap()
        .strip_prefix("build/")
        .unwrap()
        .to_string();
    std::fs::remove_file(cache.blob_data(&repomd_hex)).unwrap();

    // Runner C: warnings, both tasks run locally, the ISOs are still the same.
    let c = Runner::new();
    let (sc, oc) = c.build(&env);
    let build = c.dir.path().join("_build");
    let rpm_out: PathBuf = build.join(&rpm_path);
    let repomd_out: PathBuf = build.join(&repomd_path);
    assert_eq!(
        warnings(&oc),
        vec![
            format!(
                "warning: remote cache {cache_url}: output {} of {rpm_task}: sha256:{rpm_hex}: wrong bytes in the cache, ignored: content does not match its digest: expected sha256:{rpm_hex}, got sha256:{poisoned}",
                rpm_out.display()
            ),
            format!(
                "warning: remote cache {cache_url}: task record {rpm_tag} of {rpm_task}: output {} (sha256:{rpm_hex}) is missing or bad: not in the remote cache; ignored, running the task",
                rpm_out.display()
            ),
            format!(
                "warning: remote cache {cache_url}: task record {repo_tag} of {repo_task}: output {} (sha256:{repomd_hex}) is missing or bad: not in the remote cache; ignored, running the task",
                repomd_out.display()
            ),
        ]
    );
    assert_eq!(sc[&rpm_task], "success");
    assert_eq!(sc[&repo_task], "success");
    for n in expected
        .iter()
        .filter(|n| **n != rpm_task && **n != repo_task)
    {
        assert_eq!(sc[n], "cached", "{n}");
    }
    assert_eq!(c.isos(), isos);
    cache.garbage_collect_dry_run();
}

#[test]
fn read_mode_restores_but_never_records() {
    let cache = testkit::start_docker_registry_tls();
    let creds = tempfile::tempdir().unwrap();
    let auth = creds.path().join("auth.json");
    std::fs::write(&auth, cache.auth_json()).unwrap();
    let env = vec![
        (
            "BUILDCHAIN_REMOTE_CACHE",
            format!("oci://{}/buildchain/cache", cache.host()),
        ),
        ("BUILDCHAIN_REMOTE_CACHE_MODE", "read".to_string()),
        ("BUILDCHAIN_REMOTE_CACHE_CA", cache.ca.display().to_string()),
        ("REGISTRY_AUTH_FILE", auth.display().to_string()),
    ];
    let a = Runner::new();
    let (sa, oa) = a.build(&env);
    assert_eq!(warnings(&oa), Vec::<String>::new());
    assert!(sa.iter().all(|(_, s)| s != "cached"), "{sa:?}");
    let tags = cache
        .storage
        .join("docker/registry/v2/repositories/buildchain/cache/_manifests/tags");
    assert!(!tags.exists(), "read mode pushed a record");
}
