//! Hostile image inputs get messages that say what is wrong (issue 15, item 6): a hard-link or
//! symlink blob in an OCI or docker archive is an unsupported link entry (not a digest mismatch
//! of empty content), and a manifest over 16 MiB is refused as too large.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use buildchain::images::layout::{import_docker_archive, import_oci_layout};
use buildchain::images::manifest::Platform;
use buildchain::images::reference::Reference;
use buildchain::images::registry::{ClientOptions, RegistryClient};
use buildchain::store::Store;

fn sha(b: &[u8]) -> String {
    buildchain::fsutil::sha256_bytes(b)
}

fn append_file(b: &mut tar::Builder<std::fs::File>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

fn append_link(b: &mut tar::Builder<std::fs::File>, path: &str, target: &str, hard: bool) {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_entry_type(if hard {
        tar::EntryType::Link
    } else {
        tar::EntryType::Symlink
    });
    b.append_link(&mut h, path, target).unwrap();
}

/// An OCI layout tar whose config blob is a link to the layer blob's path.
fn oci_tar_with_link(dir: &Path, hard: bool) -> (std::path::PathBuf, String) {
    let layer = b"not really a layer".to_vec();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let (lhex, chex) = (sha(&layer), sha(config));
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{chex}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{lhex}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let mhex = sha(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{mhex}","size":{}}}]}}"#,
        manifest.len()
    );
    let path = dir.join(if hard { "hard.tar" } else { "sym.tar" });
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    append_file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    append_file(&mut b, "index.json", index.as_bytes());
    append_file(&mut b, &format!("blobs/sha256/{mhex}"), manifest.as_bytes());
    append_file(&mut b, &format!("blobs/sha256/{lhex}"), &layer);
    append_link(
        &mut b,
        &format!("blobs/sha256/{chex}"),
        &format!("blobs/sha256/{lhex}"),
        hard,
    );
    b.finish().unwrap();
    (path, chex)
}

#[test]
fn oci_archive_link_blobs_are_unsupported_link_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    for hard in [true, false] {
        let (path, chex) = oci_tar_with_link(tmp.path(), hard);
        let e = import_oci_layout(
            &store,
            &path,
            None,
            &Platform::parse("linux/amd64").unwrap(),
            false,
            "image demo",
        )
        .unwrap_err();
        let kind = if hard { "hard link" } else { "symbolic link" };
        let msg = format!("{e:#}");
        assert!(
            msg.starts_with(&format!(
                "image demo: {}: entry blobs/sha256/{chex} is a {kind} to blobs/sha256/",
                path.display()
            )),
            "{msg}"
        );
        assert!(
            msg.ends_with("unsupported link entry (blobs must be regular files)"),
            "{msg}"
        );
        assert!(!msg.contains("e3b0c442"), "{msg}");
        assert!(!store.contains(&chex));
    }
}

#[test]
fn docker_archive_link_layer_is_an_unsupported_link_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let path = tmp.path().join("docker.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    append_file(
        &mut b,
        "manifest.json",
        br#"[{"Config":"config.json","RepoTags":["demo:1"],"Layers":["a/layer.tar","b/layer.tar"]}]"#,
    );
    append_file(&mut b, "config.json", config);
    append_file(&mut b, "a/layer.tar", &[0u8; 1024]);
    append_link(&mut b, "b/layer.tar", "../a/layer.tar", false);
    b.finish().unwrap();
    let e = import_docker_archive(&store, &path, "image demo").unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        format!(
            "image demo: {}: entry b/layer.tar is a symbolic link to ../a/layer.tar: \
             unsupported link entry (the config and layers must be regular files)",
            path.display()
        )
    );
}

/// A registry on 127.0.0.1 that answers every manifest request with `size` bytes.
fn serve_big_manifest(size: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            if text.contains("/manifests/") {
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
                );
                let chunk = vec![b' '; 1 << 20];
                let mut left = size;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
            } else {
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
            }
        }
    });
    port
}

#[test]
fn manifest_over_16_mib_is_refused_as_too_large() {
    let port = serve_big_manifest(50 << 20);
    let client = RegistryClient::new(ClientOptions::default()).unwrap();
    let digest = format!("sha256:{}", "ab".repeat(32));
    for reference in ["1.0", digest.as_str()] {
        let sep = if reference.starts_with("sha256:") {
            "@"
        } else {
            ":"
        };
        let r = Reference::parse(&format!("127.0.0.1:{port}/big/image{sep}{reference}")).unwrap();
        let msg = match client.get_manifest(&r, reference, "image big") {
            Ok((body, _)) => panic!("a {} byte manifest was accepted", body.len()),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            msg.contains(&format!(
                "manifest {reference} is larger than the 16 MiB limit"
            )),
            "{msg}"
        );
        assert!(!msg.contains("does not match its digest"), "{msg}");
    }
}

/// A full disk (`/dev/full`: every write fails with ENOSPC) under the writer's I/O error, which
/// formats its source into its message and also chains it: the OS error is said once.
#[test]
fn full_disk_error_is_printed_once() {
    let mut full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let io = full.write_all(&[0u8; 4096]).unwrap_err();
    assert_eq!(io.raw_os_error(), Some(libc_enospc()));
    let err = iso9660_writer::Error::Io {
        context: "write image".into(),
        source: io,
    };
    let e = anyhow::Error::from(err).context("cannot master the tree");
    let text = buildchain::engine::error_text(&e);
    assert_eq!(
        text,
        "cannot master the tree: write image: No space left on device (os error 28)"
    );
    // `{:#}` (what was printed before) repeats it.
    assert_eq!(
        format!("{e:#}").matches("No space left on device").count(),
        2
    );
}

fn libc_enospc() -> i32 {
    28
}
