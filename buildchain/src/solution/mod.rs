//! Solutions (SPEC §9): build Solution ISOs from a definition directory and validate any
//! Solution ISO (or directory).
//!
//! - [`validate::validate_path`] runs every check over a [`tree::FileTree`] (an ISO through
//!   `iso9660_writer::IsoReader`, or a directory);
//! - [`definition`] reads `solutions/<name>/solution.yaml`; [`build`] builds `<name>-<version>.iso`.

pub mod build;
pub mod definition;
pub mod tree;
pub mod validate;
