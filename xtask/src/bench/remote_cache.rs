//! `cargo xtask bench remote-cache [--json] [--mbps N] [--fixture DIR] [--keep] [fixture flags]`
//! (issue 13): on the scale fixture, in one run, `<this exe> iso` as
//! - `cold_no_cache`: empty store, build root and dist; upstream registry behind a relay
//!   throttled to `--mbps` (default 50) MB/s, no cache;
//! - `fill`: the same with an empty local `docker-registry` (plain HTTP on loopback) as remote
//!   cache in `readwrite` mode, upstream unthrottled (fills the cache; not a goal);
//! - `cold_warm_cache`: empty store, build root and dist, upstream throttled again, cache warm
//!   (`read` mode);
//! - `warm_local`: store kept, build root and dist removed, no cache.
//!
//! Goals: `cold_warm_cache` ≤ 1.3 × `warm_local` and ≥ 5 × faster than `cold_no_cache`.
//! Without `--fixture`, a fixture is generated under `/tmp/buildchain-fixture-remote-cache`;
//! everything made here is removed at the end unless `--keep`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::e2e::{measure, Cost};
use crate::fixture::{self, Fixture, Params, Servers};

struct Opts {
    json: bool,
    mbps: u64,
    fixture: Option<PathBuf>,
    keep: bool,
    params: Params,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        json: false,
        mbps: 50,
        fixture: None,
        keep: false,
        params: Params::default(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if o.params.parse_flag(a, &mut it)? {
            continue;
        }
        match a.as_str() {
            "--json" => o.json = true,
            "--keep" => o.keep = true,
            "--mbps" => o.mbps = super::option_value::<u64>(&mut it, a)?.max(1),
            "--fixture" => {
                o.fixture = Some(PathBuf::from(
                    it.next().context("--fixture needs a directory")?,
                ))
            }
            other => bail!("unknown option {other:?}"),
        }
    }
    Ok(o)
}

/// Runs the benchmark.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    testkit::require_tool("docker-registry");
    let exe = std::env::current_exe()?;
    if exe.components().any(|c| c.as_os_str() == "debug") {
        eprintln!("warning: {} is a debug build; run `cargo run --release -p xtask -- bench remote-cache` for real numbers", exe.display());
    }
    let generated = o.fixture.is_none();
    let f = match &o.fixture {
        Some(d) => Fixture::load(d)?,
        None => {
            let dir = PathBuf::from("/tmp/buildchain-fixture-remote-cache");
            eprintln!("generating the fixture in {} …", dir.display());
            fixture::generate(&o.params, &dir)?
        }
    };
    let work = f.dir.join("bench-remote-cache");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("logs"))?;
    let res = bench(&o, &f, &exe, &work);
    if !o.keep {
        let _ = fs::remove_dir_all(&work);
        if generated {
            let _ = fs::remove_dir_all(&f.dir);
        }
    }
    res
}

fn bench(o: &Opts, f: &Fixture, exe: &std::path::Path, work: &std::path::Path) -> Result<()> {
    let servers = Servers::start(f)?;
    let (cache, cache_port) = fixture::start_registry(&work.join("cache"), 0)?;
    let cache_url = format!("oci+http://127.0.0.1:{cache_port}/buildchain/cache");
    let checkout = f.checkout();
    let store = work.join("store");
    let build_root = work.join("build");
    let dist = checkout.join("dist");
    let disk = vec![store.clone(), build_root.clone(), dist.clone()];
    let limit = o.mbps * 1_000_000;
    let run = |what: &str, cache: Option<&str>, throttle: bool, keep_store: bool| -> Result<Cost> {
        let _ = fs::remove_dir_all(&build_root);
        let _ = fs::remove_dir_all(&dist);
        if !keep_store {
            let _ = fs::remove_dir_all(&store);
        }
        servers
            .registry_limit
            .store(if throttle { limit } else { 0 }, Ordering::SeqCst);
        let mut c = Command::new(exe);
        c.arg("iso")
            .current_dir(&checkout)
            .env("BUILDCHAIN_STORE", &store)
            .env("BUILD_ROOT", &build_root)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("BUILDCHAIN_REMOTE_CACHE_CA");
        match cache {
            Some(mode) => {
                c.env("BUILDCHAIN_REMOTE_CACHE", &cache_url)
                    .env("BUILDCHAIN_REMOTE_CACHE_MODE", mode);
            }
            None => {
                c.env_remove("BUILDCHAIN_REMOTE_CACHE");
            }
        }
        let cost = measure(
            &mut c,
            what,
            &disk,
            &work.join("logs").join(format!("{what}.log")),
            &servers,
        )?;
        eprintln!(
            "{what:<16} {:8.2}s  upstream {:8.1} MiB",
            cost.secs,
            cost.registry_bytes as f64 / (1u64 << 20) as f64
        );
        Ok(cost)
    };
    let r = (|| -> Result<Vec<(&str, Cost)>> {
        Ok(vec![
            ("cold_no_cache", run("cold_no_cache", None, true, false)?),
            ("fill", run("fill", Some("readwrite"), false, false)?),
            (
                "cold_warm_cache",
                run("cold_warm_cache", Some("read"), true, false)?,
            ),
            ("warm_local", run("warm_local", None, true, true)?),
        ])
    })();
    fixture::stop_child(cache);
    drop(servers);
    let runs = r?;
    let t = |n: &str| {
        runs.iter()
            .find(|(k, _)| *k == n)
            .map_or(0.0, |(_, c)| c.secs)
    };
    let (cold, cached, warm) = (t("cold_no_cache"), t("cold_warm_cache"), t("warm_local"));
    let mut out = serde_json::Map::new();
    for (k, c) in &runs {
        out.insert(
            k.to_string(),
            json!({"s": c.secs, "upstream_bytes": c.registry_bytes}),
        );
    }
    out.insert("cache_over_warm_local".into(), json!(cached / warm));
    out.insert("cold_over_cache".into(), json!(cold / cached));
    out.insert("upstream_mbps".into(), json!(o.mbps));
    out.insert("unique_bytes".into(), json!(f.unique_bytes));
    if o.json {
        println!("{}", serde_json::Value::Object(out));
        return Ok(());
    }
    println!(
        "remote-cache benchmark: {} images ({:.2} GiB unique), {} RPMs; upstream throttled to {} MB/s; exe {}",
        f.images.len(),
        f.unique_bytes as f64 / (1u64 << 30) as f64,
        f.params.rpms,
        o.mbps,
        exe.display()
    );
    println!("| run | s | upstream MiB |");
    println!("|---|---|---|");
    for (k, c) in &runs {
        println!(
            "| {k} | {:.2} | {:.1} |",
            c.secs,
            c.registry_bytes as f64 / (1u64 << 20) as f64
        );
    }
    println!(
        "cold with warm cache / warm local = {:.2}x (goal <= 1.3x); cold without cache / cold with warm cache = {:.2}x (goal >= 5x)",
        cached / warm,
        cold / cached
    );
    Ok(())
}
