//! Types shared by the eBPF programs (`edge-ebpf`) and userspace (`edge`, `collector`).
//!
//! Everything here is `no_std` so the same definitions compile for `bpfel-unknown-none`:
//! map keys and values are `#[repr(C)]` with explicit padding, and the packet parser is
//! written against the small [`parse::Frame`] trait so it runs inside the programs and in
//! host unit tests alike.
#![no_std]

#[cfg(any(test, feature = "craft", feature = "wire"))]
extern crate alloc;
#[cfg(any(feature = "broker", feature = "ipfix"))]
extern crate std;

#[cfg(any(test, feature = "craft"))]
pub mod craft;

#[cfg(feature = "broker")]
pub mod broker;
pub mod conn;
pub mod cpu;
pub mod dns;
pub mod flow;
#[cfg(feature = "wire")]
pub mod identity;
#[cfg(feature = "wire")]
pub mod ipfix;
pub mod owner;
pub mod parse;
pub mod rtt;
pub mod stats;
pub mod table;
#[cfg(feature = "wire")]
pub mod url;
#[cfg(feature = "wire")]
pub mod wire;

pub use flow::{Direction, FlowCounters, FlowKey, Initiator};
pub use parse::{parse, Frame, Parsed};
pub use stats::{Count, Stat};
