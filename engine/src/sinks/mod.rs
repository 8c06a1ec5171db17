//! Sinks for development and local use: `stdout` and `file`.

pub mod file;
pub mod stdout;
