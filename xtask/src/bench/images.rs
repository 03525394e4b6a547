//! `cargo xtask bench images`: fetching many images from a local `docker-registry` into the ISO
//! tree, ours (fresh store, `fetch_many`: parallel, each unique blob once, hard links) vs the
//! classic loop (`skopeo copy docker://… dir:…` per image, then `hardlink -c`).
//!
//! Data: `--bases` base images (one `--base-mib` layer each) and `--apps` application images,
//! each on one of the bases plus its own layer of 8–24 MiB (`--app-mib` average): with the
//! defaults, 25 images, ~1.8 GiB of image content, ~0.55 GiB of unique blobs. Built with our
//! local builder (gzip layers of pseudo-random bytes), pushed with skopeo. Everything
//! lives under /tmp and is deleted at the end.
//!
//! Options: `--runs N` (default 3), `--bases N` (3), `--apps N` (22), `--base-mib N` (64),
//! `--app-mib N` (16). Internal: `--child-fetch JOBS STORE` (our side, run as a child process so
//! its wall time and peak RSS are measured like skopeo's).

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use buildchain::config::Profile;
use buildchain::images::inventory::Inventory;
use buildchain::images::manifest::{Manifest, Platform};
use buildchain::images::reference::Reference;
use buildchain::images::registry::{fetch_many, ClientOptions, RegistryClient};
use buildchain::images::ImageBuilder;
use buildchain::store::Store;

struct Opts {
    runs: usize,
    bases: usize,
    apps: usize,
    base_mib: usize,
    app_mib: usize,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        runs: 3,
        bases: 3,
        apps: 22,
        base_mib: 64,
        app_mib: 16,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| super::option_value::<usize>(&mut it, name);
        match a.as_str() {
            "--runs" => o.runs = num(a)?.max(1),
            "--bases" => o.bases = num(a)?.max(1),
            "--apps" => o.apps = num(a)?,
            "--base-mib" => o.base_mib = num(a)?,
            "--app-mib" => o.app_mib = num(a)?,
            other => bail!("unknown option {other:?}"),
        }
    }
    Ok(o)
}

/// Removes the scratch directory on every exit path.
struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Disk used by the given trees, each inode counted once.
fn disk_used(paths: &[&Path]) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    for p in paths {
        for e in walkdir(p) {
            if let Ok(m) = std::fs::symlink_metadata(&e) {
                if m.is_file() && seen.insert((m.dev(), m.ino())) {
                    total += m.blocks() * 512;
                }
            }
        }
    }
    total
}

fn walkdir(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let path = e.path();
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(path);
                } else {
                    out.push(path);
                }
            }
        }
    }
    out
}

/// A TCP relay to 127.0.0.1:`upstream` counting the bytes sent to clients.
fn start_relay(upstream: u16) -> Result<(u16, Arc<AtomicU64>)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    Ok((port, crate::fixture::relay_from(l, upstream)))
}

fn timed(cmd: &mut Command, what: &str) -> Result<(f64, u64, String)> {
    let tf = std::env::temp_dir().join(format!("bench-images-time-{}", std::process::id()));
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&tf)
        .arg(prog)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {what} (is /usr/bin/time installed?)"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rss = std::fs::read_to_string(&tf)
        .unwrap_or_default()
        .trim()
        .lines()
        .last()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let _ = std::fs::remove_file(&tf);
    Ok((secs, rss, String::from_utf8_lossy(&out.stdout).to_string()))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Child mode: fetch every `ref\tdest` line of `jobs` with a store at `store`; prints
/// `requests blob_bytes blobs`.
fn child_fetch(jobs: &Path, store: &Path) -> Result<()> {
    let text = std::fs::read_to_string(jobs)?;
    let mut list = Vec::new();
    for l in text.lines().filter(|l| !l.is_empty()) {
        let (r, d) = l.split_once('\t').context("bad jobs line")?;
        list.push((Reference::parse(r)?, format!("image {r}"), PathBuf::from(d)));
    }
    let store = Store::open(store)?;
    let client = RegistryClient::new(ClientOptions::default())?;
    fetch_many(
        &client,
        &store,
        &list,
        &Platform::default_linux_amd64(),
        None,
    )?;
    println!(
        "{} {} {}",
        client.stats.requests.load(Ordering::Relaxed),
        client.stats.blob_bytes.load(Ordering::Relaxed),
        client.stats.blobs.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Runs the benchmark and prints a report (medians, ratio vs the classic tools, peak RSS).
pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("--child-fetch") {
        let (j, s) = (
            args.get(1).context("jobs file")?,
            args.get(2).context("store dir")?,
        );
        return child_fetch(Path::new(j), Path::new(s));
    }
    let o = parse(args)?;
    testkit::require_tool("skopeo");
    testkit::require_tool("hardlink");
    testkit::require_tool("docker-registry");
    let root = PathBuf::from(format!(
        "/tmp/buildchain-bench-images-{}",
        std::process::id()
    ));
    let _guard = Scratch(root.clone());
    std::fs::create_dir_all(root.join("repo/images"))?;
    std::fs::write(
        root.join("repo/VERSION"),
        "VERSION_MAJOR=1\nVERSION_MINOR=0\nVERSION_PATCH=0\nVERSION_SUFFIX=\n",
    )?;

    // 1. Generate the images (local builds of pseudo-random files) and push them.
    eprintln!(
        "generating {} base + {} application images…",
        o.bases, o.apps
    );
    let mut inv = String::from("images:\n");
    let mut names = Vec::new();
    let mib = 1usize << 20;
    for b in 0..o.bases {
        let name = format!("base{b}");
        let d = root.join("repo/images").join(&name);
        std::fs::create_dir_all(&d)?;
        std::fs::write(
            d.join("rootfs.bin"),
            testkit::pseudo_random_bytes(1000 + 2 * b as u64 + 1, o.base_mib * mib),
        )?;
        std::fs::write(
            d.join("image.yaml"),
            "layers:\n  - files: [{src: rootfs.bin, dest: /rootfs.bin}]\n",
        )?;
        inv.push_str(&format!(
            "  - {{name: {name}, tag: \"1.0\", local: images/{name}/}}\n"
        ));
        names.push(name);
    }
    for a in 0..o.apps {
        let name = format!("app{a:02}");
        let d = root.join("repo/images").join(&name);
        std::fs::create_dir_all(&d)?;
        let size = (o.app_mib / 2 + (a * 7) % (o.app_mib + 1)).max(1) * mib;
        std::fs::write(
            d.join("app.bin"),
            testkit::pseudo_random_bytes(5000 + 2 * a as u64 + 1, size),
        )?;
        std::fs::write(
            d.join("image.yaml"),
            format!("base: base{}\nconfig: {{entrypoint: [/app.bin]}}\nlayers:\n  - files: [{{src: app.bin, dest: /app.bin}}]\n", a % o.bases),
        )?;
        inv.push_str(&format!(
            "  - {{name: {name}, tag: \"1.0\", local: images/{name}/}}\n"
        ));
        names.push(name);
    }
    std::fs::write(root.join("repo/images/inventory.yaml"), inv)?;
    let repo = root.join("repo");
    let inventory = Inventory::load(&repo, Profile::Default)?;
    let builder = ImageBuilder::new(&repo, Store::open(root.join("gen-store"))?, inventory, 0);
    let reg = testkit::start_docker_registry();
    let mut refs = BTreeMap::new();
    let (mut total_bytes, mut unique) = (0u64, BTreeMap::new());
    for n in &names {
        builder.materialize(n, &root.join("gen"), "", None)?;
        let src = format!("dir:{}", root.join("gen").join(n).join("1.0").display());
        let dst = format!("docker://{}/bench/{n}:1.0", reg.host());
        let st = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false", &src, &dst])
            .status()?;
        if !st.success() {
            bail!("skopeo push of {n} failed");
        }
        // What the registry serves (skopeo may rewrite the manifest on push).
        let raw = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", &dst])
            .output()?;
        if !raw.status.success() {
            bail!("skopeo inspect of {n} failed");
        }
        match Manifest::parse(&raw.stdout, None)? {
            Manifest::Image { config, layers, .. } => {
                for d in std::iter::once(&config).chain(&layers) {
                    total_bytes += d.size;
                    unique.insert(d.digest.clone(), d.size);
                }
            }
            Manifest::Index { .. } => bail!("unexpected index for {n}"),
        }
        refs.insert(
            n.clone(),
            format!("sha256:{}", buildchain::fsutil::sha256_bytes(&raw.stdout)),
        );
    }
    let unique_bytes: u64 = unique.values().sum();
    let _ = std::fs::remove_dir_all(root.join("gen"));
    let _ = std::fs::remove_dir_all(root.join("gen-store"));
    let _ = std::fs::remove_dir_all(root.join("repo"));
    eprintln!(
        "{} images, {:.2} GiB of image content, {:.2} GiB unique, pushed to {}",
        names.len(),
        total_bytes as f64 / (1u64 << 30) as f64,
        unique_bytes as f64 / (1u64 << 30) as f64,
        reg.host()
    );

    let exe = std::env::current_exe()?;
    let ours_cmd = |host: &str, out: &Path, store: &Path| -> Result<Command> {
        let jobs = root.join("jobs.txt");
        let mut s = String::new();
        for (n, d) in &refs {
            s.push_str(&format!(
                "{host}/bench/{n}@{d}\t{}\n",
                out.join(n).join("1.0").display()
            ));
        }
        std::fs::write(&jobs, s)?;
        let mut c = Command::new(&exe);
        c.args(["bench", "images", "--child-fetch"])
            .arg(&jobs)
            .arg(store);
        Ok(c)
    };
    let skopeo_loop = |host: &str, out: &Path| -> Result<(f64, u64)> {
        let start = Instant::now();
        let mut peak = 0;
        for (n, d) in &refs {
            let dest = out.join(n).join("1.0");
            std::fs::create_dir_all(dest.parent().unwrap_or(out))?;
            let (_, rss, _) = timed(
                Command::new("skopeo")
                    .args(["copy", "--quiet", "--src-tls-verify=false"])
                    .arg(format!("docker://{host}/bench/{n}@{d}"))
                    .arg(format!("dir:{}", dest.display())),
                "skopeo copy",
            )?;
            peak = peak.max(rss);
        }
        let (_, rss, _) = timed(
            Command::new("hardlink").arg("-c").arg("-q").arg(out),
            "hardlink -c",
        )?;
        Ok((start.elapsed().as_secs_f64(), peak.max(rss)))
    };
    let clean = |p: &Path| {
        let _ = std::fs::remove_dir_all(p);
    };

    // 2. Timed runs, fresh store / fresh tree each time, direct to the registry.
    let (mut t_ours, mut t_skopeo, mut rss_ours, mut rss_skopeo) =
        (Vec::new(), Vec::new(), 0u64, 0u64);
    let (mut disk_ours, mut disk_skopeo) = (0u64, 0u64);
    for run in 0..o.runs {
        let (out, store) = (root.join("ours"), root.join("store"));
        clean(&out);
        clean(&store);
        let (secs, rss, _) = timed(&mut ours_cmd(&reg.host(), &out, &store)?, "our fetch")?;
        t_ours.push(secs);
        rss_ours = rss_ours.max(rss);
        disk_ours = disk_used(&[&store, &out]);
        clean(&out);
        clean(&store);
        let sk = root.join("skopeo");
        clean(&sk);
        let (secs, rss) = skopeo_loop(&reg.host(), &sk)?;
        t_skopeo.push(secs);
        rss_skopeo = rss_skopeo.max(rss);
        disk_skopeo = disk_used(&[&sk]);
        clean(&sk);
        eprintln!(
            "run {}: ours {:.2}s, skopeo+hardlink {:.2}s",
            run + 1,
            t_ours[run],
            t_skopeo[run]
        );
    }

    // 3. Bytes transferred, through a counting TCP relay (separate, untimed runs).
    let (rport, counter) = start_relay(reg.port)?;
    let rhost = format!("127.0.0.1:{rport}");
    let (out, store) = (root.join("ours"), root.join("store"));
    let (_, _, stats) = timed(&mut ours_cmd(&rhost, &out, &store)?, "our fetch")?;
    let bytes_ours = counter.swap(0, Ordering::SeqCst);
    // Second run, same store, fresh tree: no transfer expected.
    clean(&out);
    let (_, _, stats2) = timed(
        &mut ours_cmd(&rhost, &out, &store)?,
        "our fetch (warm store)",
    )?;
    let bytes_ours_warm = counter.swap(0, Ordering::SeqCst);
    clean(&out);
    clean(&store);
    let sk = root.join("skopeo");
    skopeo_loop(&rhost, &sk)?;
    let bytes_skopeo = counter.swap(0, Ordering::SeqCst);
    clean(&sk);

    let (mo, ms) = (median(&mut t_ours), median(&mut t_skopeo));
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!("images benchmark: {} images, {:.2} GiB image content, {:.2} GiB unique blobs, {} runs (medians)", names.len(), gib(total_bytes), gib(unique_bytes), o.runs);
    println!("  ours (fetch_many, fresh store)   : {mo:7.2} s  transferred {:.3} GiB  disk {:.3} GiB  peak RSS {} MiB", gib(bytes_ours), gib(disk_ours), rss_ours / 1024);
    println!("  skopeo copy loop + hardlink -c   : {ms:7.2} s  transferred {:.3} GiB  disk {:.3} GiB  peak RSS {} MiB", gib(bytes_skopeo), gib(disk_skopeo), rss_skopeo / 1024);
    println!("  speed-up {:.2}x; our blob bytes = unique blob bytes: {} (client stats: requests/blob bytes/blobs = {})", ms / mo, stats.split_whitespace().nth(1).map(|b| b == unique_bytes.to_string()).unwrap_or(false), stats.trim());
    println!(
        "  second fetch with a warm store: {} bytes on the wire (client stats: {})",
        bytes_ours_warm,
        stats2.trim()
    );
    Ok(())
}
