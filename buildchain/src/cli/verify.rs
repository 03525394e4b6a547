//! `buildchain verify ISO|DIR` (see [`crate::trust::verify`]).

use crate::cli::output::ReportFormat;

/// `buildchain verify` arguments.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The ISO file or the tree directory.
    pub path: std::path::PathBuf,
    /// Armored OpenPGP public key the index and the RPMs must be signed with.
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ReportFormat,
}

/// Runs `buildchain verify`; returns the exit code (1 when there is an error finding).
pub fn run(args: &VerifyArgs) -> anyhow::Result<u8> {
    use anyhow::Context;
    let key = match &args.key {
        Some(k) => Some(std::fs::read(k).with_context(|| format!("cannot read {}", k.display()))?),
        None => None,
    };
    let report =
        crate::trust::verify::verify_path(&args.path, &crate::trust::verify::VerifyOptions { key });
    match args.format {
        ReportFormat::Json => print!("{}", report.to_json()),
        ReportFormat::Text => print!("{}", report.to_text()),
    }
    Ok(u8::from(report.errors() > 0))
}
