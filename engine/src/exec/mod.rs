//! Streaming execution: stateless steps, window assignment, windowed aggregation, and the
//! dataflow that connects sources, views and sinks.

pub mod aggregate;
pub mod assign;
pub mod chain;
pub mod dataflow;
pub mod pipeline;
pub mod running;
