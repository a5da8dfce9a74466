//! The edgeflow agent: loads the flow-table programs, attaches them, drains the table.
//!
//! `main.rs` only wires these modules to the command line.

pub mod cmd;
pub mod link;
pub mod owner;
pub mod probe;
pub mod report;

/// An error that is the user's to fix (exit code 2), as opposed to a runtime failure (1).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("unknown interface {0:?}")]
    UnknownInterface(String),
    #[error("{0}")]
    MissingCapability(String),
    #[error("--max-flows {got} is out of range ({min}..={max})")]
    TableSize { got: u32, min: u32, max: u32 },
    #[error("{0}")]
    Invalid(String),
    /// The kernel lacks something the programs need (`kernel::Needed::message`).
    #[error("{0}")]
    Kernel(String),
}
