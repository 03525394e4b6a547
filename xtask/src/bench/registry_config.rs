//! `cargo xtask bench registry-config [--images N] [--tags N] [--runs N] [--tree DIR]`.
//!
//! Generation time of the nginx include for a synthetic tree (default 200 images × 3 tags, 3
//! layers each), median of several runs, against an equivalent of the classic Python generator
//! (MetalK8s `static-container-registry.py` algorithm, re-written here: one `listdir` level,
//! JSON parse + sha256 per manifest, per-name `try_files` blob location) on a flat v2s2 tree it
//! understands. Both are timed in-process (Python interpreter startup excluded), warm page
//! cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use buildchain::registry_config::{generate, synthetic, Constants, Options};

const CLASSIC_PY: &str = r#"
import hashlib, json, os, resource, sys, time

V2S2 = "application/vnd.docker.distribution.manifest.v2+json"

def generate(root, server_root, prefix):
    out = ["location = /v2 { return 301 /v2/; }\nlocation = /v2/ { return 200 'ok'; }\n"]
    images = {}
    for name in os.listdir(root):
        ndir = os.path.join(root, name)
        if not os.path.isdir(ndir):
            continue
        for tag in os.listdir(ndir):
            mpath = os.path.join(ndir, tag, "manifest.json")
            if not os.path.isfile(mpath):
                continue
            try:
                with open(mpath) as f:
                    data = json.load(f)
            except ValueError:
                continue
            if data.get("schemaVersion") != 2 or data.get("mediaType") != V2S2:
                continue
            images.setdefault(name, set()).add(tag)
    for name, tags in sorted(images.items()):
        out.append("location = /v2/%s%s/tags/list { return 200 '%s'; }\n"
                   % (prefix, name, json.dumps({"name": name, "tags": sorted(tags)})))
        seen = set()
        for tag in sorted(tags):
            with open(os.path.join(root, name, tag, "manifest.json"), "rb") as f:
                h = hashlib.sha256(f.read()).hexdigest()
            body = ("alias %s/%s/%s/; default_type %s; add_header Docker-Content-Digest sha256:%s;"
                    " try_files manifest.json =404;" % (server_root, name, tag, V2S2, h))
            out.append('location = "/v2/%s%s/manifests/%s" { %s }\n' % (prefix, name, tag, body))
            if h not in seen:
                out.append('location = "/v2/%s%s/manifests/sha256:%s" { %s }\n' % (prefix, name, h, body))
            else:
                out.append('# Digest for "%s:%s" already served\n' % (name, tag))
            seen.add(h)
        out.append('location ~ "/v2/%s%s/blobs/sha256:([a-f0-9]{64})" { alias %s/%s/; try_files %s =404; }\n'
                   % (prefix, name, server_root, name, " ".join("%s/$1" % t for t in sorted(tags))))
    return "".join(out)

root, runs = sys.argv[1], int(sys.argv[2])
times = []
for _ in range(runs):
    t = time.perf_counter()
    text = generate(root, "$metalk8s_1_0_0_images", "metalk8s-1.0.0/")
    times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"median_s": times[len(times) // 2], "min_s": times[0], "bytes": len(text),
                  "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"#;

fn arg(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .context("missing value")?
            .parse()
            .with_context(|| format!("bad value for {name}")),
        None => Ok(default),
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// (median, min).
fn median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0])
}

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn time_ours(tree: &Path, runs: usize) -> Result<((f64, f64), usize, usize)> {
    let opts = Options {
        constants: Constants::Include,
        ..Options::metalk8s("1.0.0")
    };
    let mut times = Vec::new();
    let mut text = String::new();
    for _ in 0..runs {
        let t = Instant::now();
        text = generate(tree, &opts)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let locations = text.matches("\nlocation ").count() + usize::from(text.starts_with("location"));
    Ok((median(times), text.len(), locations))
}

/// Runs the benchmark and prints a report (medians, ratio vs the classic tools, peak RSS).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let images = arg(args, "--images", 200)?;
    let tags = arg(args, "--tags", 3)?;
    let runs = arg(args, "--runs", 7)?.max(1);
    if let Some(i) = args.iter().position(|a| a == "--tree") {
        // An existing tree (e.g. a real `_build/root/images`): ours only.
        let tree = PathBuf::from(args.get(i + 1).context("--tree needs a path")?);
        let (t, bytes, locations) = time_ours(&tree, runs)?;
        println!(
            "registry-config on {}: median {:.1} ms (min {:.1}), {bytes} bytes, {locations} locations",
            tree.display(),
            t.0 * 1e3,
            t.1 * 1e3
        );
        phases(&tree)?;
        return Ok(());
    }
    let scratch = Scratch(
        std::env::temp_dir().join(format!("buildchain-bench-registry-{}", std::process::id())),
    );
    let full = scratch.0.join("full");
    let flat = scratch.0.join("flat");
    synthetic::write_tree(&full, images, tags, 256, false)?;
    synthetic::write_tree(&flat, images, tags, 256, true)?;
    println!(
        "registry-config: synthetic tree of {images} images × {tags} tags (3 layers each), {runs} runs"
    );

    let (t_full, bytes_full, loc_full) = time_ours(&full, runs)?;
    println!(
        "  buildchain, mixed tree (v2s2+OCI, nested names): median {:.1} ms (min {:.1}), {} bytes, {} locations",
        t_full.0 * 1e3,
        t_full.1 * 1e3,
        bytes_full,
        loc_full
    );
    let (t_flat, bytes_flat, loc_flat) = time_ours(&flat, runs)?;
    println!(
        "  buildchain, flat v2s2 tree:                      median {:.1} ms (min {:.1}), {} bytes, {} locations",
        t_flat.0 * 1e3,
        t_flat.1 * 1e3,
        bytes_flat,
        loc_flat
    );
    phases(&full)?;
    println!("  buildchain peak RSS: {} KiB", peak_rss_kib());

    let py = scratch.0.join("classic.py");
    std::fs::write(&py, CLASSIC_PY)?;
    let out = Command::new("python3")
        .arg(&py)
        .arg(&flat)
        .arg(runs.to_string())
        .output()
        .context("cannot run python3 (needed for the classic side-by-side)")?;
    if !out.status.success() {
        bail!(
            "classic generator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let t_py = v["median_s"].as_f64().context("median_s")?;
    let t_py_min = v["min_s"].as_f64().context("min_s")?;
    println!(
        "  classic algorithm (Python, in-process), flat v2s2 tree: median {:.1} ms (min {:.1}), {} bytes, peak RSS {} KiB",
        t_py * 1e3,
        t_py_min * 1e3,
        v["bytes"],
        v["rss_kib"]
    );
    println!(
        "  ratio classic / buildchain (flat tree): median {:.2}×, min {:.2}× (buildchain also \
         lists every tag dir, stats every served blob, validates names; emits 5× more config)",
        t_py / t_flat.0,
        t_py_min / t_flat.1
    );
    Ok(())
}

/// Per-phase timing (scan, resolve, render) of one generation, for diagnosis.
pub fn phases(tree: &Path) -> Result<()> {
    use buildchain::registry_config::{render, tree};
    let t = Instant::now();
    let scan = tree::scan(tree)?;
    let t_scan = t.elapsed();
    let t = Instant::now();
    let repos = tree::resolve(tree, &scan)?;
    let t_resolve = t.elapsed();
    let t = Instant::now();
    let text = render::render("metalk8s-1.0.0/", "$x", &repos, Constants::Include);
    let t_render = t.elapsed();
    println!(
        "  phases: scan {:.1} ms, resolve {:.1} ms, render {:.1} ms ({} bytes)",
        t_scan.as_secs_f64() * 1e3,
        t_resolve.as_secs_f64() * 1e3,
        t_render.as_secs_f64() * 1e3,
        text.len()
    );
    Ok(())
}
