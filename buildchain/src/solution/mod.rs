//! Solutions: build Solution ISOs and validate any Solution ISO. (Being implemented: issue 7.)

pub mod cli;
