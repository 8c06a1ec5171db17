//! The engine's own sinks: `stdout` and `file` for development and local use, and
//! `object_store` for cloud storage with its spill-to-disk buffer.

pub mod file;
pub mod object_sink;
pub mod stdout;
