//! The source or sink a connection serves (a Modbus link, an OPC UA session): where its
//! connection state and refusals go.

use std::fmt::Display;
use std::sync::Arc;

use weir_engine::connector::Connection;
use weir_engine::observe::telemetry::{SinkTelemetry, SourceTelemetry};

/// The part a connection serves.
#[derive(Clone)]
pub enum Owner {
    /// A source (reads).
    Source(Arc<SourceTelemetry>),
    /// A sink (writes).
    Sink(Arc<SinkTelemetry>),
}

impl Owner {
    /// Records whether the connection is up.
    pub fn set_up(&self, up: bool) {
        match self {
            Owner::Source(t) => {
                t.set_connection(if up { Connection::Up } else { Connection::Down })
            }
            Owner::Sink(t) => t.set_connected(up),
        }
    }

    /// The source's or sink's name.
    pub fn name(&self) -> &str {
        match self {
            Owner::Source(t) => t.name(),
            Owner::Sink(t) => t.name(),
        }
    }

    /// A connection attempt was refused: a source counts it among its skips (`reason`); a
    /// sink's refusals show in its connection state and log.
    pub fn refused(&self, reason: &'static str, context: &str, detail: impl Display) {
        if let Owner::Source(t) = self {
            t.skip(reason, context, detail);
        }
    }
}
