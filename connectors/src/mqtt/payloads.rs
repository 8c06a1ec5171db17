//! The source's decoder for its format: JSON or raw payloads ([`super::decode`]), or
//! Sparkplug B ([`super::sparkplug`]), which also keeps node state, counts what it saw and
//! has commands to publish.

use arrow::record_batch::RecordBatch;
use weir_engine::observe::telemetry::SourceTelemetry;

use super::decode::{Decoder, Skip};
#[cfg(feature = "sparkplug")]
use super::sparkplug::decode::SparkplugDecoder;
#[cfg(feature = "sparkplug")]
use super::sparkplug::nodes::Life;
#[cfg(feature = "sparkplug")]
use super::sparkplug::{NODES, REBIRTHS, SEQ_ERRORS, STALE_DEATHS};

/// A source's decoder.
pub enum Payloads {
    /// JSON or raw payloads.
    Plain(Decoder),
    /// Sparkplug B, with its counters.
    #[cfg(feature = "sparkplug")]
    Sparkplug(Box<Sparkplug>),
}

/// A message a source publishes as a Sparkplug host: a rebirth request.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// `spBv1.0/{group}/NCMD/{edge_node}`.
    pub topic: String,
    /// The encoded payload.
    pub payload: Vec<u8>,
}

/// A Sparkplug B decoder and its metrics.
#[cfg(feature = "sparkplug")]
pub struct Sparkplug {
    decoder: SparkplugDecoder,
    /// When `system.sparkplug_nodes` was last set.
    table_at: Option<std::time::Instant>,
    /// Messages came since.
    table_stale: bool,
    rebirths: metrics::Counter,
    seq_errors: metrics::Counter,
    stale_deaths: metrics::Counter,
    nodes: [metrics::Gauge; 3],
}

#[cfg(feature = "sparkplug")]
impl Sparkplug {
    /// Wraps `decoder` with the metrics of source `source`.
    pub fn new(decoder: SparkplugDecoder, source: &str) -> Sparkplug {
        Sparkplug {
            decoder,
            table_at: None,
            table_stale: true,
            rebirths: REBIRTHS.counter_with(&[source]),
            seq_errors: SEQ_ERRORS.counter_with(&[source]),
            stale_deaths: STALE_DEATHS.counter_with(&[source]),
            nodes: Life::ALL.map(|l| NODES.gauge_with(&[source, l.label()])),
        }
    }

    fn publish_table(&mut self, telemetry: &SourceTelemetry) {
        if !self.table_stale
            || self
                .table_at
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
        {
            return;
        }
        self.table_at = Some(std::time::Instant::now());
        self.table_stale = false;
        telemetry.set_table("sparkplug_nodes", self.decoder.nodes().table());
    }

    fn aside(&mut self) -> Aside {
        let e = std::mem::take(&mut self.decoder.events);
        self.rebirths.increment(e.rebirths_needed);
        self.seq_errors.increment(e.seq_errors);
        self.stale_deaths.increment(e.stale_deaths);
        if e.life_changed {
            for (g, n) in self.nodes.iter().zip(self.decoder.nodes().by_life()) {
                g.set(n as f64);
            }
            // the table shows it at once
            self.table_at = None;
        }
        Aside {
            skipped: e.skipped,
            commands: e.commands,
        }
    }
}

/// What a message caused besides rows.
#[derive(Default)]
pub struct Aside {
    /// Metrics left out of it (Sparkplug B).
    pub skipped: Vec<Skip>,
    /// Messages to publish (rebirth requests).
    pub commands: Vec<Command>,
}

impl Payloads {
    /// True when the decoder keeps tables of what it saw (Sparkplug B's node table).
    pub fn keeps_tables(&self) -> bool {
        !matches!(self, Payloads::Plain(_))
    }

    /// Rows decoded and not yet taken.
    pub fn rows(&self) -> usize {
        match self {
            Payloads::Plain(d) => d.rows(),
            #[cfg(feature = "sparkplug")]
            Payloads::Sparkplug(s) => s.decoder.rows(),
        }
    }

    /// The decoded rows as a batch; empty afterwards.
    pub fn finish(&mut self) -> arrow::error::Result<RecordBatch> {
        match self {
            Payloads::Plain(d) => d.finish(),
            #[cfg(feature = "sparkplug")]
            Payloads::Sparkplug(s) => s.decoder.finish(),
        }
    }

    /// Decodes one message (see [`Decoder::decode`], and the Sparkplug decoder's).
    pub fn decode(
        &mut self,
        topic: &str,
        captured: &[Option<&str>],
        payload: &[u8],
        arrival_ns: i64,
    ) -> Result<usize, Skip> {
        match self {
            Payloads::Plain(d) => d.decode(topic, captured, payload, arrival_ns),
            #[cfg(feature = "sparkplug")]
            Payloads::Sparkplug(s) => {
                s.table_stale = true;
                s.decoder.decode(topic, payload, arrival_ns)
            }
        }
    }

    /// Sets the source's `sparkplug_nodes` table (Sparkplug B) when messages came since,
    /// at most once a second unless a node's state changed (call it at least once a second).
    #[cfg_attr(not(feature = "sparkplug"), allow(unused_variables))]
    pub fn publish_tables(&mut self, telemetry: &SourceTelemetry) {
        match self {
            Payloads::Plain(_) => {}
            #[cfg(feature = "sparkplug")]
            Payloads::Sparkplug(s) => s.publish_table(telemetry),
        }
    }

    /// What the last messages caused besides rows; counted here.
    pub fn aside(&mut self) -> Aside {
        match self {
            Payloads::Plain(_) => Aside::default(),
            #[cfg(feature = "sparkplug")]
            Payloads::Sparkplug(s) => s.aside(),
        }
    }
}
