//! registry-config generation: validation of hostile trees, determinism, and `nginx -t` on every
//! generated form (constants only, images only, full, MetalK8s shape, Solution Jinja form once
//! rendered).

use std::path::Path;
use std::process::Command;

use buildchain::registry_config::{
    generate, manifest, serve, synthetic, tree::sha256_hex, Constants, Options,
};

fn opts(prefix: &str, root: &str, constants: Constants) -> Options {
    Options {
        name_prefix: prefix.into(),
        server_root: root.into(),
        constants,
    }
}

fn small_tree(root: &Path) {
    synthetic::write_tree(root, 7, 3, 64, false).unwrap();
}

/// Runs `nginx -t` on a complete nginx.conf whose server includes `files` (after `set` lines).
fn nginx_t(vars: &[(&str, &str)], files: &[(&str, String)]) {
    let nginx = testkit::nginx_bin();
    let dir = tempfile::tempdir().unwrap();
    let mut includes = Vec::new();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        includes.push(p);
    }
    let cfg = serve::ServeConfig {
        listen: format!("127.0.0.1:{}", testkit::free_port()),
        work_dir: dir.path().to_path_buf(),
        variables: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        includes,
    };
    let conf = dir.path().join("nginx.conf");
    serve::write_nginx_conf(&conf, &cfg).unwrap();
    testkit::run_ok(
        Command::new(nginx)
            .arg("-t")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path()),
    );
}

/// Renders the Solution placeholders the way MetalK8s does (`repository`, `registry_root`),
/// checking no other Jinja delimiter is present.
fn render_solution(text: &str, repository: &str, root: &str) -> String {
    let stripped = text
        .replace("{{ repository }}", "")
        .replace("{{ registry_root }}", "");
    for delim in ["{{", "}}", "{%", "%}", "{#", "#}"] {
        assert!(
            !stripped.contains(delim),
            "unexpected Jinja delimiter {delim} in the Solution template"
        );
    }
    text.replace("{{ repository }}", repository)
        .replace("{{ registry_root }}", root)
}

#[test]
fn nginx_accepts_every_generated_form() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    small_tree(&images);
    let root = images.to_str().unwrap();
    let var = "$metalk8s_130_0_0_dev_images";
    let full = generate(
        &images,
        &opts("metalk8s-130.0.0-dev/", var, Constants::Include),
    )
    .unwrap();
    let only = generate(
        &images,
        &opts("metalk8s-130.0.0-dev/", var, Constants::Only),
    )
    .unwrap();
    let omit = generate(&images, &Options::metalk8s("130.0.0-dev")).unwrap();
    let abs = generate(&images, &opts("", root, Constants::Include)).unwrap();
    let sol = generate(&images, &Options::solution()).unwrap();
    let sol = render_solution(&sol, "example-solution-1.0.0", root);
    let vars = [("metalk8s_130_0_0_dev_images", root)];
    assert_eq!(full, format!("{only}{omit}"));
    assert!(!only.contains("/manifests/"));
    assert!(!omit.contains("location = /v2/ "));
    nginx_t(&vars, &[("full.inc", full)]);
    nginx_t(&vars, &[("only.inc", only.clone())]);
    nginx_t(&vars, &[("omit.inc", omit.clone())]);
    nginx_t(&[], &[("abs.inc", abs)]);
    nginx_t(&[], &[("sol.inc", sol.clone())]);
    // The MetalK8s deployment shape: several files in one server, in glob order.
    nginx_t(
        &vars,
        &[
            ("example-solution-1.0.0-registry-config.inc", sol),
            ("99-metalk8s-130.0.0-dev-registry.inc", omit),
            ("99-registry-common.inc", only),
        ],
    );
}

#[test]
fn output_is_deterministic_and_sorted() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    small_tree(&a);
    // Same content in another directory (directory listing order differs on disk).
    synthetic::write_tree(&b, 7, 3, 64, false).unwrap();
    let o = Options::metalk8s("1.0");
    let ga = generate(&a, &o).unwrap();
    assert_eq!(ga, generate(&a, &o).unwrap());
    assert_eq!(ga, generate(&b, &o).unwrap());
    // Files outside tag directories (docker-archive tarballs) and extra files in tag
    // directories (signatures) change nothing.
    std::fs::write(b.join("pause-3.9.tar"), b"tar").unwrap();
    std::fs::write(b.join("group0/notes.txt"), b"x").unwrap();
    std::fs::write(b.join("image1/1.0.0/signature-1"), b"sig").unwrap();
    assert_eq!(ga, generate(&b, &o).unwrap());
    // Names sorted: `group0/image0` … before `image1`.
    let names: Vec<&str> = ga
        .lines()
        .filter_map(|l| l.strip_prefix("# Image metalk8s-1.0/"))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 7);
    // No regex locations, no try_files.
    assert!(!ga.contains("location ~"));
    assert!(!ga.contains("try_files"));
}

#[test]
fn shape_of_one_image() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    let layer = b"layer-bytes".to_vec();
    let digest = synthetic::write_image(
        &images,
        "tools/etcd",
        "3.5.15-0",
        manifest::OCI_MANIFEST,
        b"{}",
        std::slice::from_ref(&layer),
    )
    .unwrap();
    let out = generate(&images, &Options::metalk8s("130.0.0-dev")).unwrap();
    let lh = sha256_hex(&layer);
    let expected_tag = format!(
        "location = \"/v2/metalk8s-130.0.0-dev/tools/etcd/manifests/3.5.15-0\" {{\n    \
         alias \"$metalk8s_130_0_0_dev_images/tools/etcd/3.5.15-0/manifest.json\";\n    \
         types {{ }} default_type application/vnd.oci.image.manifest.v1+json;\n    \
         add_header Docker-Distribution-API-Version registry/2.0 always;\n    \
         add_header Docker-Content-Digest sha256:{digest};\n    \
         if ($request_method !~ \"^(GET|HEAD)$\") {{\n        \
         rewrite ^ \"/v2/metalk8s-130.0.0-dev/tools/etcd/blobs/uploads/\" last;\n    }}\n}}\n"
    );
    assert!(out.contains(&expected_tag), "{out}");
    assert!(out.contains(&format!(
        "location = \"/v2/metalk8s-130.0.0-dev/tools/etcd/manifests/sha256:{digest}\""
    )));
    assert!(out.contains(&format!(
        "location = \"/v2/metalk8s-130.0.0-dev/tools/etcd/blobs/sha256:{lh}\" {{\n    \
         alias \"$metalk8s_130_0_0_dev_images/tools/etcd/3.5.15-0/{lh}\";\n    \
         types {{ }} default_type application/octet-stream;\n    \
         add_header Docker-Distribution-API-Version registry/2.0 always;\n    \
         add_header Docker-Content-Digest sha256:{lh};\n    \
         if ($request_method !~ \"^(GET|HEAD)$\") {{\n        \
         rewrite ^ \"/v2/metalk8s-130.0.0-dev/tools/etcd/blobs/uploads/\" last;\n    }}\n}}\n"
    )));
    let unsupported = r#"'{"errors": [{"code": "UNSUPPORTED", "message": "read-only registry: only GET and HEAD are supported", "detail": ""}]}'"#;
    assert!(out.contains(&format!(
        "location ^~ \"/v2/metalk8s-130.0.0-dev/tools/etcd/blobs/uploads/\" {{\n    \
         add_header Docker-Distribution-API-Version registry/2.0 always;\n    \
         add_header Allow \"GET, HEAD\" always;\n    \
         types {{ }} default_type application/json;\n    \
         return 405 {unsupported};\n}}\n"
    )));
    // Every JSON location refuses writes with the same 405, headers repeated inside the `if`.
    let refuse = format!(
        "    if ($request_method !~ \"^(GET|HEAD)$\") {{\n        \
         add_header Docker-Distribution-API-Version registry/2.0 always;\n        \
         add_header Allow \"GET, HEAD\" always;\n        \
         return 405 {unsupported};\n    }}\n"
    );
    assert_eq!(out.matches(&refuse).count(), 3, "{out}");
    assert!(out.contains(
        "return 200 '{\"name\": \"metalk8s-130.0.0-dev/tools/etcd\", \"tags\": [\"3.5.15-0\"]}';"
    ));
    println!("{out}");
}

fn expect_refused(images: &Path, needle: &str) {
    let err = generate(images, &Options::metalk8s("1.0"))
        .map(|s| format!("unexpectedly accepted:\n{s}"))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(needle),
        "error {msg:?} does not mention {needle:?}"
    );
}

#[test]
fn hostile_names_and_tags_are_refused() {
    for (name, tag) in [
        ("foo\"bar", "1.0"),
        ("foo'bar", "1.0"),
        ("a{b}", "1.0"),
        ("a;b", "1.0"),
        ("a b", "1.0"),
        ("a..b", "1.0"),
        ("Upper", "1.0"),
        ("x$y", "1.0"),
        ("evil\nname", "1.0"),
        ("ok/..x", "1.0"),
        ("ok", "1.0;"),
        ("ok", "t\"ag"),
        ("ok", "{tag}"),
        ("ok", "..x"),
        ("ok", "a b"),
        ("ok", "$x"),
        ("ok", "x}; return 200 pwned; #"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let images = tmp.path().join("images");
        // A valid image next to the hostile one: the whole tree is refused anyway.
        synthetic::write_image(&images, "good", "1.0", manifest::OCI_MANIFEST, b"{}", &[]).unwrap();
        let dir = images.join(name).join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("manifest.json"), "{}").unwrap();
        let bad = if name.starts_with("ok") && !name.contains("..") {
            tag
        } else {
            name.rsplit('/').next().unwrap()
        };
        expect_refused(&images, "refusing");
        expect_refused(&images, &format!("{bad:?}"));
    }
}

#[test]
fn broken_trees_are_refused_with_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    // Unsupported media type (could inject into `default_type`).
    let images = tmp.path().join("mt");
    let d = images.join("img/1.0");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("manifest.json"),
        r#"{"schemaVersion":2,"mediaType":"text/html; return 200 x","config":{},"layers":[]}"#,
    )
    .unwrap();
    expect_refused(&images, "img/1.0/manifest.json");
    expect_refused(&images, "unsupported manifest mediaType");

    // A blob referenced but stored nowhere.
    let images = tmp.path().join("missing");
    synthetic::write_image(
        &images,
        "img",
        "1.0",
        manifest::DOCKER_MANIFEST,
        b"{}",
        &[b"x".to_vec()],
    )
    .unwrap();
    std::fs::remove_file(images.join("img/1.0").join(sha256_hex(b"x"))).unwrap();
    expect_refused(&images, "img:1.0: blob sha256:");

    // A blob whose size differs from the descriptor.
    let images = tmp.path().join("size");
    synthetic::write_image(
        &images,
        "img",
        "1.0",
        manifest::DOCKER_MANIFEST,
        b"{}",
        &[b"x".to_vec()],
    )
    .unwrap();
    std::fs::write(images.join("img/1.0").join(sha256_hex(b"x")), b"xx").unwrap();
    expect_refused(&images, "is 2 bytes");

    // An index whose child manifest is not stored.
    let images = tmp.path().join("index");
    let d = images.join("img/1.0");
    std::fs::create_dir_all(&d).unwrap();
    let h = "a".repeat(64);
    std::fs::write(
        d.join("manifest.json"),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"sha256:{h}","size":10}}]}}"#,
            manifest::OCI_INDEX,
            manifest::OCI_MANIFEST
        ),
    )
    .unwrap();
    expect_refused(&images, "child manifest sha256:aaaa");

    // A symlink in the tree.
    let images = tmp.path().join("link");
    synthetic::write_image(&images, "img", "1.0", manifest::OCI_MANIFEST, b"{}", &[]).unwrap();
    std::os::unix::fs::symlink("/etc", images.join("etc")).unwrap();
    expect_refused(&images, "symbolic links");

    // Bad options.
    let images = tmp.path().join("mt");
    for (p, r, msg) in [
        (
            "a\"b/",
            "$x",
            "invalid name prefix \"a\\\"b/\": must be a repository name",
        ),
        (
            "ok/",
            "/a;b",
            "invalid server root \"/a;b\": character ';' is not allowed",
        ),
        (
            "{% x %}/",
            "$x",
            "invalid name prefix \"{% x %}/\": stray `{`",
        ),
        (
            "ok/",
            "{{ a }",
            "invalid server root \"{{ a }\": unterminated `{{` placeholder",
        ),
    ] {
        let e = generate(&images, &opts(p, r, Constants::Only)).unwrap_err();
        assert!(format!("{e:#}").starts_with(msg), "{p} {r}: {e:#}");
    }
}

#[test]
fn constants_only_does_not_read_the_tree() {
    let out = generate(
        Path::new("/nonexistent/images"),
        &opts("", "$x", Constants::Only),
    )
    .unwrap();
    assert!(out.contains("location = /v2/ {"));
    assert!(out.contains("NAME_UNKNOWN"));
}

#[test]
fn cli_writes_the_same_bytes_and_leaves_no_temp_file() {
    use buildchain::cli::registry_config::{run, RegistryConfigArgs};
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    small_tree(&images);
    let out = tmp.path().join("out/metalk8s-registry.inc");
    run(&RegistryConfigArgs {
        images_dir: images.clone(),
        name_prefix: "metalk8s-1.0".into(),
        server_root: "$metalk8s_1_0_images".into(),
        omit_constants: true,
        only_constants: false,
        output: Some(out.clone()),
    })
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        generate(&images, &Options::metalk8s("1.0")).unwrap()
    );
    // Written through a temp file renamed into place: nothing else is left beside it.
    let names: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![out.file_name().unwrap().to_owned()]);
}

/// The dev helper: `serve::prepare` writes a complete nginx.conf that real nginx runs, and the
/// registry answers through it.
#[test]
fn serve_prepare_runs_with_real_nginx() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    small_tree(&images);
    let work = tmp.path().join("srv");
    let port = testkit::free_port();
    let conf = serve::prepare(&images, &work, &format!("127.0.0.1:{port}"), "dev/").unwrap();
    let mut child = Command::new(testkit::nginx_bin())
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&work)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    testkit::wait_for_port(port, &mut child, "nginx");
    let _guard = Kill(child);
    let (s, _, body) = testkit::http_request(port, "GET", "/v2/dev/image1/tags/list", &[]);
    assert_eq!(s, 200);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"{"name": "dev/image1", "tags": ["1.0.0", "1.1.0", "1.2.0"]}"#
    );
    let m = std::fs::read(images.join("image1/1.1.0/manifest.json")).unwrap();
    let (s, h, body) = testkit::http_request(port, "GET", "/v2/dev/image1/manifests/1.1.0", &[]);
    assert_eq!(s, 200);
    assert_eq!(body, m);
    assert!(h.contains(&(
        "docker-content-digest".to_string(),
        format!("sha256:{}", sha256_hex(&m))
    )));
}
