//! Issue 12: delta ISOs (`delta build` / `delta apply` byte-identical, wrong base refused, links
//! and modes kept, images served to containerd from the two mounts).

use crate::delivery_common;
use crate::solution_common;

use std::path::Path;
use std::process::Command;

use delivery_common::*;

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
