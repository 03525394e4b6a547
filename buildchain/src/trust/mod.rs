//! Offline trust (SPEC §12): the content index, signatures, the SBOM, `verify` and the
//! completeness gate.

pub mod completeness;
pub mod contents;
pub mod index;
pub mod index_reader;
pub mod sbom;
pub mod signing;
pub mod verify;
