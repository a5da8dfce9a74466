//! The link to the broker: the spool that keeps summaries until the broker has them
//! ([`spool`]), and the MQTT publisher that sends them ([`mqtt`]).

pub mod mqtt;
pub mod spool;
