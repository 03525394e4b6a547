//! Helpers shared by the integration tests and benchmarks.
//!
//! Rules they enforce: a missing external tool is a test *failure* with a clear message (never a
//! silent skip); servers listen on 127.0.0.1 ephemeral ports only and are stopped by PID on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Panics with an actionable message when `tool` is not on `PATH`.
pub fn require_tool(tool: &str) -> PathBuf {
    match which(tool) {
        Some(p) => p,
        None => panic!(
            "required external tool `{tool}` is not installed; run `scripts/test.sh` (it installs \
             every system package the tests need) or `apt-get install` the package providing it"
        ),
    }
}

/// Looks `tool` up on `PATH`.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs a command, panicking with its full output when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs a command and returns its output whatever the exit status.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 30s");
}

/// A background server process, killed (by PID) when dropped.
pub struct Server {
    child: Child,
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    /// Scratch directory holding its config, logs and storage.
    pub dir: tempfile::TempDir,
}

impl Server {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// `127.0.0.1:<port>` (for image references).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// PID of the server process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}

/// Stops a server we started: SIGTERM, up to `grace` to exit, then SIGKILL; always reaped.
fn stop_child(child: &mut std::process::Child, grace: Duration) {
    // SAFETY: plain kill(2) on our own child's PID.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts the CNCF `docker-registry` (Debian package) on an ephemeral loopback port.
pub fn start_docker_registry() -> Server {
    let bin = require_tool("docker-registry");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = format!(
        "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
        dir.path().join("storage").display()
    );
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(bin)
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("registry.log")).unwrap(),
        ))
        .spawn()
        .expect("start docker-registry");
    wait_for_port(port, &mut child, "docker-registry");
    Server { child, port, dir }
}

/// Writes a complete nginx.conf whose `server {}` block contains `server_body`
/// (use `{port}` placeholders are already substituted by the caller), then starts nginx.
///
/// `server_body` is inserted inside `server { listen 127.0.0.1:PORT; ... }`; `http_extra` goes at
/// `http {}` level (e.g. `map`/`set` helpers).
pub fn start_nginx(http_extra: &str, server_body: &str) -> Server {
    let bin = nginx_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let d = dir.path();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    std::fs::create_dir_all(d.join("tmp")).unwrap();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\n\
         events {{ worker_connections 256; }}\nhttp {{\n  access_log {d}/logs/access.log;\n\
         client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
         uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n{http_extra}\n  server {{\n    listen 127.0.0.1:{port};\n{server_body}\n  }}\n}}\n",
        d = d.display()
    );
    let conf_path = d.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    run_ok(
        Command::new(&bin)
            .arg("-t")
            .arg("-q")
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(d),
    );
    let mut child = Command::new(&bin)
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(d)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    wait_for_port(port, &mut child, "nginx");
    Server { child, port, dir }
}

/// The nginx binary (`/usr/sbin` is not always on PATH).
pub fn nginx_bin() -> PathBuf {
    which("nginx")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.exists()))
        .unwrap_or_else(|| {
            panic!("required external tool `nginx` is not installed; run `scripts/test.sh`")
        })
}

/// Minimal HTTP/1.1 request on loopback, returning (status, headers lower-cased, body).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header end");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let hdrs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, hdrs, buf[split + 4..].to_vec())
}

/// The workspace root (parent of the crate running the test).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

/// Path of the `buildchain` binary built for this workspace's tests (`CARGO_BIN_EXE_buildchain`
/// is only set inside the buildchain crate, so others call this).
pub fn buildchain_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BUILDCHAIN_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("buildchain");
        if p.exists() {
            return p;
        }
    }
    panic!("buildchain binary not built; run `cargo build -p buildchain` first")
}

/// Deterministic pseudo-random bytes (xorshift), for reproducible fixtures.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Recursively copies `src` into `dst` (files, directories, symlinks kept as symlinks).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    for entry in std::fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())) {
        let entry = entry.unwrap();
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&from, &to);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
    }
}

/// Copies the product definition of the workspace (VERSION, salt/, images/, packages/,
/// solutions/) into `dst`, making a scratch checkout for end-to-end tests.
pub fn copy_product_repo(dst: &Path) {
    let src = workspace_root();
    for entry in ["VERSION", "salt", "images", "packages", "solutions"] {
        let p = src.join(entry);
        if p.is_dir() {
            copy_tree(&p, &dst.join(entry));
        } else if p.is_file() {
            std::fs::copy(&p, dst.join(entry)).unwrap();
        }
    }
}

/// Starts stock nginx the way a node runs it: master as root, workers as `user nobody nogroup;`
/// (unprivileged, as in the upstream nginx image), on an ephemeral loopback port, in the
/// foreground; stopped by PID on drop (SIGTERM to the master ends the workers too).
/// `server_body` goes inside `server { listen 127.0.0.1:PORT; ... }`.
pub fn start_nginx_unprivileged(server_body: &str) -> Server {
    let bin = nginx_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let d = dir.path();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let conf = format!(
        "daemon off;\nuser nobody nogroup;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/logs/error.log warn;\nevents {{ worker_connections 256; }}\nhttp {{\n\
         \x20 access_log {d}/logs/access.log;\n  client_body_temp_path {d}/tmp;\n\
         \x20 proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
         \x20 uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
         \x20 server {{\n    listen 127.0.0.1:{port};\n{server_body}\n  }}\n}}\n",
        d = d.display()
    );
    let conf_path = d.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    run_ok(
        Command::new(&bin)
            .args(["-t", "-q", "-c"])
            .arg(&conf_path)
            .arg("-p")
            .arg(d),
    );
    let mut child = Command::new(&bin)
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(d)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    wait_for_port(port, &mut child, "nginx");
    Server { child, port, dir }
}

/// Lines of the nginx error log of a server started by [`start_nginx_unprivileged`].
pub fn nginx_error_log(server: &Server) -> String {
    std::fs::read_to_string(server.dir.path().join("logs/error.log")).unwrap_or_default()
}

/// A `containerd` daemon with its own root, state, socket and config in a temp dir (CRI plugin
/// disabled: the tests only pull and import), killed by PID on drop.
pub struct Containerd {
    child: Child,
    /// Scratch directory (config.toml, root/, state/, log).
    pub dir: tempfile::TempDir,
}

impl Containerd {
    /// Path of its gRPC socket (for `ctr -a`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }
    /// `ctr -a <socket> -n <namespace>`, ready for a sub-command.
    pub fn ctr(&self, namespace: &str) -> Command {
        let mut c = Command::new(require_tool("ctr"));
        c.arg("-a").arg(self.socket()).args(["-n", namespace]);
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(10));
    }
}

/// Starts `containerd` (Debian package) with a minimal config in a fresh temp dir and waits
/// until `ctr version` answers on its socket.
pub fn start_containerd() -> Containerd {
    let bin = require_tool("containerd");
    require_tool("ctr");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let config = format!(
        "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{d}/containerd.sock\"\n\
         [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
         [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
        d = d.display()
    );
    let cfg = d.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let child = Command::new(bin)
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(d.join("containerd.log")).unwrap(),
        ))
        .spawn()
        .expect("start containerd");
    let mut c = Containerd { child, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if c.socket().exists()
            && c.ctr("default")
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        {
            return c;
        }
        if let Ok(Some(status)) = c.child.try_wait() {
            panic!(
                "containerd exited early with {status}:\n{}",
                std::fs::read_to_string(c.dir.path().join("containerd.log")).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "containerd did not answer on {} within 30s",
                c.socket().display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `podman` with private storage (`vfs`, no overlay), run root, registries and containers.conf
/// in `dir`, plus `dir/policy.json` (accept anything) for `--signature-policy`, so nothing is
/// read from /etc/containers; pulls need no daemon.
pub fn podman(dir: &Path) -> Command {
    let bin = require_tool("podman");
    std::fs::create_dir_all(dir).unwrap();
    let w = |name: &str, text: String| {
        let p = dir.join(name);
        if !p.exists() {
            std::fs::write(&p, text).unwrap();
        }
        p
    };
    let policy = w(
        "policy.json",
        r#"{"default": [{"type": "insecureAcceptAnything"}]}"#.to_string(),
    );
    let registries = w(
        "registries.conf",
        "unqualified-search-registries = []\n".to_string(),
    );
    let storage = w(
        "storage.conf",
        format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"{d}/run\"\ngraphroot = \"{d}/root\"\n",
            d = dir.display()
        ),
    );
    let containers = w(
        "containers.conf",
        "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n".to_string(),
    );
    let _ = policy;
    let mut c = Command::new(bin);
    c.env("CONTAINERS_REGISTRIES_CONF", &registries)
        .env("CONTAINERS_STORAGE_CONF", &storage)
        .env("CONTAINERS_CONF", &containers)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--storage-driver", "vfs"]);
    c
}

/// The privately unpacked `zypper` (Debian's dnf-plugins-core `Breaks: zypper`, so
/// `scripts/test.sh` unpacks its .deb): `$BUILDCHAIN_ZYPPER`, else
/// `/opt/buildchain/zypper/usr/bin/zypper`, else `zypper` on PATH; panics with the fix otherwise.
pub fn zypper_bin() -> PathBuf {
    let candidates = [
        std::env::var_os("BUILDCHAIN_ZYPPER").map(PathBuf::from),
        Some(PathBuf::from("/opt/buildchain/zypper/usr/bin/zypper")),
        which("zypper"),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "required external tool `zypper` is not installed: run `scripts/test.sh` (it \
                 unpacks the zypper .deb into /opt/buildchain/zypper) or set BUILDCHAIN_ZYPPER"
            )
        })
}

/// A `docker-registry` serving HTTPS (certificate for IP 127.0.0.1 from a CA made here with
/// `openssl`) with htpasswd basic auth (bcrypt hash from python3's `crypt`).
pub struct TlsRegistry {
    /// The server (its `dir` holds config, CA, storage).
    pub server: Server,
    /// PEM of the CA that signed the server certificate.
    pub ca: PathBuf,
    /// The registry's `config.yml` (for `docker-registry garbage-collect`).
    pub config: PathBuf,
    /// Filesystem storage root.
    pub storage: PathBuf,
    /// `(user, password)` accepted.
    pub user: (String, String),
}

impl TlsRegistry {
    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.server.host()
    }

    /// Path of a blob's bytes in the registry storage.
    pub fn blob_data(&self, hex: &str) -> PathBuf {
        self.storage.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }

    /// A docker `config.json` body with this registry's credentials.
    pub fn auth_json(&self) -> String {
        let (u, p) = &self.user;
        let b64 = run_ok(
            Command::new("python3")
                .arg("-c")
                .arg("import base64,sys; print(base64.b64encode(sys.argv[1].encode()).decode())")
                .arg(format!("{u}:{p}")),
        );
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}",
            self.host(),
            String::from_utf8_lossy(&b64.stdout).trim()
        )
    }

    /// `docker-registry garbage-collect --dry-run` on the storage; panics when it fails or
    /// logs an error.
    pub fn garbage_collect_dry_run(&self) -> String {
        let out = run(Command::new(require_tool("docker-registry"))
            .args(["garbage-collect", "--dry-run"])
            .arg(&self.config));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "garbage-collect failed:\n{text}");
        assert!(
            !text.to_ascii_lowercase().contains("error"),
            "garbage-collect reported an error:\n{text}"
        );
        text
    }
}

/// Starts `docker-registry` on an ephemeral loopback port with TLS and htpasswd auth.
pub fn start_docker_registry_tls() -> TlsRegistry {
    let bin = require_tool("docker-registry");
    let openssl = require_tool("openssl");
    require_tool("python3");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run_ok(
        Command::new(&openssl)
            .args(["req", "-x509"])
            .args(ec)
            .args(["-days", "2", "-subj", "/CN=buildchain test CA"])
            .arg("-keyout")
            .arg(d.join("ca.key"))
            .arg("-out")
            .arg(d.join("ca.pem")),
    );
    run_ok(
        Command::new(&openssl)
            .arg("req")
            .args(ec)
            .args(["-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(d.join("server.key"))
            .arg("-out")
            .arg(d.join("server.csr")),
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run_ok(
        Command::new(&openssl)
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(d.join("server.csr"))
            .arg("-CA")
            .arg(d.join("ca.pem"))
            .arg("-CAkey")
            .arg(d.join("ca.key"))
            .arg("-extfile")
            .arg(d.join("ext.cnf"))
            .arg("-out")
            .arg(d.join("server.pem")),
    );
    let user = ("runner".to_string(), "s3cret-cache".to_string());
    let hash = run_ok(
        Command::new("python3")
            .arg("-W")
            .arg("ignore")
            .arg("-c")
            .arg("import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))")
            .arg(&user.1),
    );
    std::fs::write(
        d.join("htpasswd"),
        format!(
            "{}:{}\n",
            user.0,
            String::from_utf8_lossy(&hash.stdout).trim()
        ),
    )
    .unwrap();
    let port = free_port();
    let storage = d.join("storage");
    let config = format!(
        "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls: {{certificate: {}, key: {}}}\nauth:\n  htpasswd: {{realm: buildchain-cache, path: {}}}\n",
        storage.display(),
        d.join("server.pem").display(),
        d.join("server.key").display(),
        d.join("htpasswd").display(),
    );
    let cfg = d.join("config.yml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(bin)
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(d.join("registry.log")).unwrap(),
        ))
        .spawn()
        .expect("start docker-registry");
    wait_for_port(port, &mut child, "docker-registry (TLS)");
    TlsRegistry {
        ca: d.join("ca.pem"),
        config: cfg,
        storage,
        user,
        server: Server { child, port, dir },
    }
}
