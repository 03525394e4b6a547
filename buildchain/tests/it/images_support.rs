//! Helpers shared by the `images_*` integration tests (included with `#[path]`): hand-made OCI
//! layouts (independent of our builder), pushing with skopeo, and a fault-injecting HTTP proxy.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use testkit::{require_tool, run_ok};

/// sha256 hex.
pub fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A gzip layer holding one file `name` with `size` pseudo-random bytes; returns (gz, tar).
pub fn layer(seed: u64, name: &str, size: usize) -> (Vec<u8>, Vec<u8>) {
    let data = testkit::pseudo_random_bytes(seed, size);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, &data[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), tar)
}

/// An image for a hand-made layout.
pub struct TestImage {
    /// (gzip bytes, tar bytes) per layer.
    pub layers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Architecture.
    pub arch: &'static str,
    /// A label value, to make configs differ.
    pub title: String,
}

/// Writes an OCI image layout at `dir` holding `img` under ref name `tag`; returns the manifest
/// (bytes) digest hex.
pub fn write_oci_layout(dir: &Path, img: &TestImage, tag: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let h = sha(b);
        std::fs::write(blobs.join(&h), b).unwrap();
        h
    };
    let config = serde_json::to_vec(&json!({
        "architecture": img.arch, "os": "linux",
        "config": {"Env": ["A=1"], "Labels": {"title": img.title}},
        "rootfs": {"type": "layers", "diff_ids": img.layers.iter().map(|(_, t)| format!("sha256:{}", sha(t))).collect::<Vec<_>>()},
    }))
    .unwrap();
    let ch = put(&config);
    let layers: Vec<Value> = img
        .layers
        .iter()
        .map(|(gz, _)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{}", put(gz)), "size": gz.len()}))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{ch}"), "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let mh = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{mh}"),
            "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
        .unwrap(),
    )
    .unwrap();
    mh
}

/// `skopeo copy oci:LAYOUT:tag docker://HOST/repo:tag` (plain HTTP), optionally `--format v2s2`;
/// returns the manifest digest the registry serves.
pub fn push(layout: &Path, tag: &str, host: &str, repo: &str, v2s2: bool) -> String {
    let mut c = Command::new(require_tool("skopeo"));
    c.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if v2s2 {
        c.args(["--format", "v2s2"]);
    }
    c.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{host}/{repo}:{tag}"));
    run_ok(&mut c);
    let out = run_ok(Command::new(require_tool("skopeo")).args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{host}/{repo}:{tag}"),
    ]));
    format!("sha256:{}", sha(&out.stdout))
}

/// `skopeo copy docker://REF dir:DEST` (plain HTTP).
pub fn skopeo_pull(reference: &str, dest: &Path, all: bool) {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut c = Command::new(require_tool("skopeo"));
    c.args(["copy", "--quiet", "--src-tls-verify=false"]);
    if all {
        c.arg("--all");
    }
    c.arg(format!("docker://{reference}"))
        .arg(format!("dir:{}", dest.display()));
    run_ok(&mut c);
}

/// Every file of a directory: name → bytes.
pub fn dir_files(d: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Asserts two `dir:` layouts hold the same files with the same bytes.
pub fn assert_same_dir(ours: &Path, theirs: &Path) {
    let (a, b) = (dir_files(ours), dir_files(theirs));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "file names differ"
    );
    for (k, v) in &a {
        assert!(
            v == &b[k],
            "{k} differs between {} and {}",
            ours.display(),
            theirs.display()
        );
    }
}

/// HTTP PUT of a manifest (for hand-written indexes).
pub fn put_manifest(port: u16, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "PUT /v2/{repo}/manifests/{reference} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    String::from_utf8_lossy(&resp)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// What the proxy does to a matching request.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Close the connection with a TCP reset before answering.
    Reset,
    /// Answer this status without contacting the registry (`Retry-After` seconds if given).
    Status(u16, Option<u32>),
    /// Forward the headers and only half of the body, then close.
    Truncate,
    /// Flip the last byte of the body.
    Corrupt,
}

/// A fault applied to the next `times` requests whose path contains `path_contains`.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Substring of the request path.
    pub path_contains: String,
    /// What to do.
    pub kind: FaultKind,
    /// How many more times.
    pub times: usize,
}

/// Authentication the proxy enforces in front of the registry.
#[derive(Clone, Debug)]
pub enum AuthMode {
    /// Anonymous bearer tokens: `/token?service=…&scope=…` hands out `token`, `/v2/…` requires it.
    Bearer(String),
    /// `Authorization: Basic <b64>` required on `/v2/…`.
    Basic(String),
}

/// A tiny HTTP/1.1 proxy on 127.0.0.1 in front of an upstream, counting requests and injecting
/// faults. Every exchange uses its own connection (`Connection: close`).
pub struct Proxy {
    /// Listening port.
    pub port: u16,
    /// Requests received.
    pub requests: Arc<AtomicUsize>,
    /// Paths requested, in order.
    pub paths: Arc<Mutex<Vec<String>>>,
    /// Pending faults.
    pub faults: Arc<Mutex<Vec<Fault>>>,
    /// Authentication enforced, if any.
    pub auth: Arc<Mutex<Option<AuthMode>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts a proxy to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Proxy {
            port,
            requests: Arc::default(),
            paths: Arc::default(),
            faults: Arc::default(),
            auth: Arc::default(),
            stop: Arc::default(),
        };
        let (requests, paths, faults, stop, auth) = (
            p.requests.clone(),
            p.paths.clone(),
            p.faults.clone(),
            p.stop.clone(),
            p.auth.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (requests, paths, faults, auth) = (
                    requests.clone(),
                    paths.clone(),
                    faults.clone(),
                    auth.clone(),
                );
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream, port, &requests, &paths, &faults, &auth);
                });
            }
        });
        p
    }
    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// Adds a fault.
    pub fn inject(&self, path_contains: &str, kind: FaultKind, times: usize) {
        self.faults.lock().unwrap().push(Fault {
            path_contains: path_contains.into(),
            kind,
            times,
        });
    }
    /// Faults not yet consumed.
    pub fn pending(&self) -> Vec<Fault> {
        self.faults
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f.times > 0)
            .cloned()
            .collect()
    }
    /// How many requests had a path containing `s`.
    pub fn count(&self, s: &str) -> usize {
        self.paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains(s))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(b[0]);
    }
    Ok(buf)
}

fn reset(s: TcpStream) {
    use std::os::unix::io::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

fn respond(client: &mut TcpStream, status: &str, extra: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )?;
    client.write_all(body)
}

#[allow(clippy::too_many_arguments)]
fn handle(
    mut client: TcpStream,
    upstream: u16,
    own_port: u16,
    requests: &AtomicUsize,
    paths: &Mutex<Vec<String>>,
    faults: &Mutex<Vec<Fault>>,
    auth: &Mutex<Option<AuthMode>>,
) -> std::io::Result<()> {
    let head = read_head(&mut client)?;
    let text = String::from_utf8_lossy(&head).to_string();
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    requests.fetch_add(1, Ordering::SeqCst);
    paths.lock().unwrap().push(path.clone());
    let authz = text.split("\r\n").find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.trim().to_string())
    });
    let mode = auth.lock().unwrap().clone();
    match &mode {
        Some(AuthMode::Bearer(token)) if path.starts_with("/token") => {
            return respond(
                &mut client,
                "200 OK",
                "",
                format!("{{\"token\":\"{token}\"}}").as_bytes(),
            );
        }
        Some(AuthMode::Bearer(token)) if authz.as_deref() != Some(&format!("Bearer {token}")) => {
            let ch = format!(
                "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{own_port}/token\",service=\"test-registry\",scope=\"repository:faults/alpha:pull\"\r\n"
            );
            return respond(
                &mut client,
                "401 Unauthorized",
                &ch,
                br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
            );
        }
        Some(AuthMode::Basic(b64)) if authz.as_deref() != Some(&format!("Basic {b64}")) => {
            return respond(
                &mut client,
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"test\"\r\n",
                b"{}",
            );
        }
        _ => {}
    }
    let fault = {
        let mut f = faults.lock().unwrap();
        f.iter_mut()
            .find(|f| f.times > 0 && path.contains(&f.path_contains))
            .map(|f| {
                f.times -= 1;
                f.kind.clone()
            })
    };
    match &fault {
        Some(FaultKind::Reset) => {
            reset(client);
            return Ok(());
        }
        Some(FaultKind::Status(code, after)) => {
            let ra = after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            let body = br#"{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}"#;
            write!(
                client,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{ra}Connection: close\r\n\r\n",
                body.len()
            )?;
            client.write_all(body)?;
            return Ok(());
        }
        _ => {}
    }
    // Forward with Connection: close.
    let mut lines: Vec<&str> = text.trim_end().split("\r\n").collect();
    lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    let req = format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n"));
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(resp.len());
    let (rhead, body) = resp.split_at(split);
    let rtext = String::from_utf8_lossy(rhead).to_string();
    let mut rl: Vec<&str> = rtext.trim_end().split("\r\n").collect();
    rl.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    let new_head = format!("{}\r\nConnection: close\r\n\r\n", rl.join("\r\n"));
    client.write_all(new_head.as_bytes())?;
    match fault {
        Some(FaultKind::Truncate) => {
            client.write_all(&body[..body.len() / 2])?;
            client.flush()?;
            reset(client);
        }
        Some(FaultKind::Corrupt) => {
            let mut b = body.to_vec();
            if let Some(last) = b.last_mut() {
                *last ^= 0xff;
            }
            client.write_all(&b)?;
        }
        _ => client.write_all(body)?,
    }
    Ok(())
}

/// Where test layouts go.
pub fn layout_dir(root: &Path, name: &str) -> PathBuf {
    root.join("layouts").join(name)
}
