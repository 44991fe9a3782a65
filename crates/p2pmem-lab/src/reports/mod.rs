//! What the lab makes of a plan's answers: the demo's rows and summary, and a capture's
//! `truth.json`.

pub mod demo;
pub mod grouped;
pub mod truth;
