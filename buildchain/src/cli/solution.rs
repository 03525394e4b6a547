//! `buildchain solution build|validate`.

use crate::cli::output::ReportFormat;

/// `buildchain solution …` sub-commands.
#[derive(clap::Subcommand, Debug)]
pub enum SolutionCommand {
    /// Build `<name>-<version>.iso` from a Solution definition directory.
    Build {
        /// The Solution definition directory (`solutions/<name>`).
        dir: std::path::PathBuf,
        /// Version to build (default: every version defined).
        #[arg(long)]
        version: Option<String>,
        /// Output directory.
        #[arg(short, long, default_value = "dist")]
        output: std::path::PathBuf,
    },
    /// Validate a Solution ISO built by any tool.
    Validate {
        /// The ISO file.
        iso: std::path::PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: ReportFormat,
        /// Armored OpenPGP public key `/CONTENTS.json.asc` must verify with.
        #[arg(long)]
        key: Option<std::path::PathBuf>,
    },
}

/// Runs a `solution` sub-command; returns the process exit code.
pub fn run(cmd: &SolutionCommand) -> anyhow::Result<u8> {
    match cmd {
        SolutionCommand::Validate { iso, format, key } => {
            let key = match key {
                Some(k) => Some(
                    std::fs::read(k)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", k.display()))?,
                ),
                None => None,
            };
            let report = crate::solution::validate::validate_path_with_key(iso, key.as_deref());
            match format {
                ReportFormat::Json => print!("{}", report.to_json()),
                ReportFormat::Text => print!("{}", report.to_text()),
            }
            Ok(u8::from(report.errors() > 0))
        }
        SolutionCommand::Build {
            dir,
            version,
            output,
        } => {
            let built = crate::solution::build::build_cli(dir, version.as_deref(), output)?;
            for b in built {
                println!("{}  {}", b.sha256, b.iso.display());
            }
            Ok(0)
        }
    }
}
