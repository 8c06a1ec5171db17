//! Weir's engine: pipeline files, the compiler onto DataFusion, event-time windows, the
//! dataflow that runs them, live state over Flight SQL, and the telemetry of it all.
//!
//! # Architecture
//!
//! ```text
//!  connectors (weir-connectors)          engine (this crate)
//!  ────────────────────────────          ──────────────────────────────────────────────────────
//!  source task ── SourceOutput ──▶ runtime ──▶ exec::dataflow ──▶ exec::pipeline (per view/insert)
//!   (decode, micro-batch,  bounded    (one task:   routes batches,      branches: window assignment
//!    event time, skips)    channel     sources,    moves watermarks,    + stateless steps (chain)
//!                                      sinks,      closes windows       ──▶ exec::window operator
//!                                      live)                                 (tumble_hop, session:
//!                                        │                                    partial aggregate state)
//!                                        │                               ──▶ steps after the aggregate
//!                                        ▼
//!  sink task ◀── bounded channel ◀── rows for sinks        live::LiveWriter ──▶ live::LiveHub
//!   (file, object_store + spill,                            (latest, history,      (snapshots)
//!    mqtt, stdout)                                           sources, system)         │
//!                                                                                     ▼
//!                                                                       flight (Flight SQL server)
//! ```
//!
//! - [`parse`] reads pipeline files into statements; [`compile`] checks them, plans each
//!   query with DataFusion and lowers the plan into streaming operators ([`exec`]), before
//!   anything connects.
//! - [`connector`] holds the traits sources and sinks implement and the registry of
//!   connectors by name; the concrete connectors live in the `weir-connectors` crate and are
//!   registered by the `weir` binary. The engine names none of them.
//! - [`runtime`] starts sources and sinks as tasks and drives the [`exec::dataflow`] in one
//!   task: a consistent point of the whole run lies between two batches.
//! - [`observe`] defines every metric once ([`observe::telemetry`]) with the per-component
//!   telemetry structs that `/metrics`, the run summary and the live system tables read, and
//!   serves `/metrics`, `/healthz` and `/readyz`.
//! - [`live`] keeps the tables that [`flight`] serves: each view's newest window per key,
//!   recent output, recent source rows, and system tables.

pub mod backoff;
pub mod checkpoint;
pub mod clock;
pub mod compile;
pub mod connector;
pub mod dead_letter;
pub mod diagnostic;
pub mod exec;
pub mod files;
pub mod flight;
pub mod json;
pub mod live;
pub mod node;
pub mod observe;
pub mod parse;
pub mod reference;
pub mod runtime;
#[cfg(any(feature = "flight", feature = "page"))]
mod secret;
pub mod sync;

pub use compile::{Project, compile};
pub use connector::Connectors;
pub use diagnostic::{Diagnostics, Location, PipelineError};
pub use files::{fingerprint, load_files};
