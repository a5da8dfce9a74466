//! The edgeflow collector: subscribes to the agents' summaries over MQTT, stores them in
//! SQLite and serves a dashboard, a JSON API and Prometheus metrics.
//!
//! `main.rs` only wires these modules: [`config`] → [`broker`] (optional, in-process) →
//! [`mqtt`] (subscriber) → [`ingest`] (decode, validate, dedup) → [`store`]; [`http`] serves
//! [`api`] results and [`metrics`].

pub mod api;
pub mod broker;
pub mod config;
pub mod http;
pub mod ingest;
pub mod loadgen;
pub mod metrics;
pub mod mqtt;
pub mod rate;
pub mod server;
pub mod store;

/// An error that is the user's to fix (exit code 2), as opposed to a runtime failure (1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
