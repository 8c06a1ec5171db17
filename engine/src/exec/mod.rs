//! Streaming execution: stateless steps, window assignment, windowed aggregation, and the
//! dataflow that connects sources, views and sinks.

pub mod budget;
pub(crate) mod chain;
pub mod dataflow;
pub mod ids;
pub mod isolate;
pub(crate) mod pipeline;
pub mod pushdown;
pub(crate) mod running;
pub mod snapshot;
pub(crate) mod window;
