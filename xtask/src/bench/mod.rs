//! `cargo xtask bench <what>`: benchmarks against the classic tools, in the same run.

mod e2e;
mod images;
mod iso;
mod registry_config;
mod remote_cache;
mod repodata;
mod solution;
mod verify;

use std::process::ExitCode;

/// The value following option `name` in `it`, parsed (`--runs 3`).
pub fn option_value<T: std::str::FromStr>(
    it: &mut std::slice::Iter<'_, String>,
    name: &str,
) -> anyhow::Result<T> {
    let v = it
        .next()
        .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?;
    v.parse()
        .map_err(|_| anyhow::anyhow!("{name} needs a number, found {v:?}"))
}

/// `cargo xtask bench --help`.
pub const HELP: &str = "\
Benchmarks against the classic tools, in the same run (build with --release)

Usage: cargo xtask bench <BENCHMARK> [OPTIONS]

Benchmarks:
  e2e                cargo xtask iso vs the classic pipeline on the scale fixture (cold, warm, noop, salt_edit, image_bump) [--json] [--runs R] [--fixture DIR] [fixture flags]
  iso                ISO mastering vs xorriso + implantisomd5 [--blobs N] [--blob-mib M] [--small N] [--runs R] [--keep]
  images             image fetch from a local docker-registry vs skopeo copy + hardlink [--runs N] [--bases N] [--apps N] [--base-mib N] [--app-mib N]
  registry-config    static-registry nginx configuration vs the classic script
  remote-cache       cold runner with a warm remote cache vs cold without it (upstream at ~50 MB/s) vs warm local store [--json] [--mbps N] [--fixture DIR] [--keep] [fixture flags]
  repodata           yum repodata vs createrepo_c
  solution-validate  Solution ISO validation vs the classic checks
  verify             buildchain verify of a >= 1 GiB ISO vs checkisomd5 + sha256sum

Each prints both timings and the ratio; see xtask/src/bench/<name>.rs for the data sets.
";

/// Dispatches `cargo xtask bench <name> [args…]`.
pub fn main(args: &[String]) -> ExitCode {
    let Some(name) = args.first() else {
        eprint!("{HELP}");
        return ExitCode::from(2);
    };
    if matches!(name.as_str(), "-h" | "--help" | "help") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let rest = &args[1..];
    let result = match name.as_str() {
        "iso" => iso::run(rest),
        "e2e" => e2e::run(rest),
        "images" => images::run(rest),
        "registry-config" => registry_config::run(rest),
        "remote-cache" => remote_cache::run(rest),
        "repodata" => repodata::run(rest),
        "solution-validate" => solution::run(rest),
        "verify" => verify::run(rest),
        other => Err(anyhow::anyhow!(
            "unknown benchmark {other:?} (see `cargo xtask bench --help`)"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
