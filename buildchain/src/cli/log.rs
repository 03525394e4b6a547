//! Diagnostics on standard error through `tracing`: warnings (registry retries, say) by default,
//! more with `-v`/`-vv`/`-vvv`, or exactly what `RUST_LOG` asks for when it is set.

use tracing_subscriber::EnvFilter;

/// `-v`/`--verbose` (repeatable).
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// More diagnostics on standard error: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// Installs the stderr subscriber once per process (later calls do nothing).
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(level),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}
