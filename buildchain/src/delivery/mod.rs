//! Delivering releases (issue 12): [`plan`] (what a build fetches and the predicted ISO size),
//! [`diff`] (two ISOs or trees compared), [`delta`] (delta ISOs that name their base).

pub mod cli;
pub mod delta;
pub mod diff;
pub mod plan;
