//! `cargo xtask bench <what>`: benchmarks against the classic tools, in the same run.

mod e2e;
mod images;
mod iso;
mod registry_config;
mod repodata;
mod solution;

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

/// Dispatches `cargo xtask bench <name> [args…]`.
pub fn main(args: &[String]) -> ExitCode {
    let Some(name) = args.first() else {
        eprintln!("usage: cargo xtask bench <e2e|iso|images|registry-config|repodata|solution-validate> [options]");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match name.as_str() {
        "iso" => iso::run(rest),
        "e2e" => e2e::run(rest),
        "images" => images::run(rest),
        "registry-config" => registry_config::run(rest),
        "repodata" => repodata::run(rest),
        "solution-validate" => solution::run(rest),
        other => Err(anyhow::anyhow!("unknown benchmark {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
