//! Container images: inventory, registry client, OCI/docker archives, local builds, `dir:` layout.
//! (Being implemented: see issue 4.)

pub mod cli;
