//! Weir's engine: pipeline files, the compiler onto DataFusion, event-time windows,
//! the dataflow that runs them, and the development sinks.

pub mod backoff;
pub mod clock;
pub mod compile;
pub mod connector;
pub mod diagnostic;
pub mod exec;
pub mod files;
pub mod flight;
pub mod live;
pub mod observe;
pub mod parse;
pub mod runtime;
pub mod sinks;
pub mod window;

pub use compile::{Project, compile};
pub use connector::Connectors;
pub use diagnostic::{Diagnostics, Location, PipelineError};
pub use files::{fingerprint, load_files};
