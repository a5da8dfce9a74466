//! Reporting: a drained window ([`window`]), its summary on the wire ([`summary`]), the
//! agent's health in it ([`health`]), and reading summaries back ([`decode`]).

pub mod decode;
pub mod health;
pub mod summary;
pub mod window;
