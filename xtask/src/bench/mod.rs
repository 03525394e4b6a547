//! `cargo xtask bench <what>`: benchmarks against the classic tools, in the same run.

use std::process::ExitCode;

/// Dispatches `cargo xtask bench <name> [args…]`.
pub fn main(args: &[String]) -> ExitCode {
    let Some(name) = args.first() else {
        eprintln!("usage: cargo xtask bench <iso|images|registry-config|repodata|solution-validate> [options]");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match name.as_str() {
        other => Err(anyhow::anyhow!("unknown benchmark {other:?}")),
    };
    let _ = rest;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
