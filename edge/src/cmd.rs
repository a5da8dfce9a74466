//! The commands: `edgeflow run` ([`run`], configured by [`config`]) and `edgeflow watch`
//! ([`watch`]).

pub mod config;
pub mod run;
pub mod watch;
