//! Thin CLI verbs of [`crate::delivery`]: `plan`, `diff`, `delta build|apply`.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::cli::output::{DiffFormat, ReportFormat};
use crate::cli::UsageError;
use crate::config::Settings;
use crate::engine::{Graph, RunOptions};

/// `plan [--format text|json] [--media M]`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ReportFormat,
    /// Also report fit on this medium: dvd5, dvd9, bd25, bd50 or a size in bytes.
    #[arg(long)]
    pub media: Option<String>,
}

/// Runs `plan`.
pub fn plan(a: &PlanArgs, settings: &Settings, graph: &Graph, mut ropts: RunOptions) -> Result<u8> {
    // The local tasks run quietly: standard output is the plan.
    ropts.reporter = crate::engine::Reporter::Silent;
    ropts.progress_bars = false;
    let media = match &a.media {
        Some(m) => Some(
            crate::delivery::plan::parse_media(m)
                .map_err(|e| UsageError(format!("--media: {e}")))?,
        ),
        None => None,
    };
    let p = crate::delivery::plan::plan(settings, graph, ropts, media)?;
    if a.format == ReportFormat::Json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print!("{}", crate::delivery::plan::render_text(&p));
    }
    Ok(0)
}

/// `diff OLD NEW [--format text|json|html] [-o FILE]`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Old ISO or directory.
    pub old: std::path::PathBuf,
    /// New ISO or directory.
    pub new: std::path::PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: DiffFormat,
    /// Write to this file (atomically) instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<std::path::PathBuf>,
}

/// Runs `diff`.
pub fn diff(a: &DiffArgs) -> Result<u8> {
    let d = crate::delivery::diff::diff(&a.old, &a.new)?;
    let text = match a.format {
        DiffFormat::Json => serde_json::to_string_pretty(&d)? + "\n",
        DiffFormat::Html => crate::delivery::diff::render_html(&d),
        DiffFormat::Text => crate::delivery::diff::render_text(&d),
    };
    match &a.output {
        Some(p) => crate::fsutil::write_atomic(p, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(0)
}

/// `delta build|apply`.
#[derive(Subcommand, Debug)]
pub enum DeltaCmd {
    /// Build a delta ISO holding NEW's metadata and only the files absent from OLD.
    Build {
        /// The base ISO.
        old: std::path::PathBuf,
        /// The full new ISO.
        new: std::path::PathBuf,
        /// The delta ISO to write.
        #[arg(short = 'o', long)]
        output: std::path::PathBuf,
    },
    /// Rebuild NEW byte-identical from OLD and a delta ISO.
    Apply {
        /// The base ISO the delta names.
        old: std::path::PathBuf,
        /// The delta ISO.
        delta: std::path::PathBuf,
        /// The full ISO to write.
        #[arg(short = 'o', long)]
        output: std::path::PathBuf,
    },
}

/// Runs `delta`.
pub fn delta(c: &DeltaCmd) -> Result<u8> {
    match c {
        DeltaCmd::Build { old, new, output } => {
            let r = crate::delivery::delta::build(old, new, output)?;
            println!(
                "wrote {} ({} bytes): {} files from the base, {} in the delta ({} bytes)",
                output.display(),
                r.delta_bytes,
                r.from_base,
                r.in_delta,
                r.in_delta_bytes
            );
        }
        DeltaCmd::Apply { old, delta, output } => {
            let sha = crate::delivery::delta::apply(old, delta, output)?;
            println!("wrote {} (sha256 {sha})", output.display());
        }
    }
    Ok(0)
}
