//! The source's decoder for its format: JSON or raw payloads ([`super::decode`]), or
//! Sparkplug B ([`super::sparkplug`]), which also keeps node state, counts what it saw and
//! has commands to publish.

use arrow::record_batch::RecordBatch;

use super::decode::{Decoder, Skip};
use super::sparkplug::decode::{Command, SparkplugDecoder};
use super::sparkplug::nodes::Life;
use super::sparkplug::{NODES, REBIRTHS, SEQ_ERRORS, STALE_DEATHS};

/// A source's decoder.
pub enum Payloads {
    /// JSON or raw payloads.
    Plain(Decoder),
    /// Sparkplug B, with its counters.
    Sparkplug(Box<Sparkplug>),
}

/// A Sparkplug B decoder and its metrics.
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
    /// Rows decoded and not yet taken.
    pub fn rows(&self) -> usize {
        match self {
            Payloads::Plain(d) => d.rows(),
            Payloads::Sparkplug(s) => s.decoder.rows(),
        }
    }

    /// The decoded rows as a batch; empty afterwards.
    pub fn finish(&mut self) -> arrow::error::Result<RecordBatch> {
        match self {
            Payloads::Plain(d) => d.finish(),
            Payloads::Sparkplug(s) => s.decoder.finish(),
        }
    }

    /// Decodes one message (see [`Decoder::decode`] and [`SparkplugDecoder::decode`]).
    pub fn decode(
        &mut self,
        topic: &str,
        captured: &[Option<&str>],
        payload: &[u8],
        arrival_ns: i64,
    ) -> Result<usize, Skip> {
        match self {
            Payloads::Plain(d) => d.decode(topic, captured, payload, arrival_ns),
            Payloads::Sparkplug(s) => {
                s.table_stale = true;
                s.decoder.decode(topic, payload, arrival_ns)
            }
        }
    }

    /// Sets the source's `sparkplug_nodes` table (Sparkplug B) when messages came since,
    /// at most once a second unless a node's state changed (call it at least once a second).
    pub fn publish_tables(&mut self, telemetry: &weir_engine::observe::telemetry::SourceTelemetry) {
        let Payloads::Sparkplug(s) = self else { return };
        if !s.table_stale
            || s.table_at
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
        {
            return;
        }
        s.table_at = Some(std::time::Instant::now());
        s.table_stale = false;
        telemetry.set_table("sparkplug_nodes", s.decoder.nodes().table());
    }

    /// What the last messages caused besides rows; counted here.
    pub fn aside(&mut self) -> Aside {
        let Payloads::Sparkplug(s) = self else {
            return Aside::default();
        };
        let e = std::mem::take(&mut s.decoder.events);
        s.rebirths.increment(e.rebirths_needed);
        s.seq_errors.increment(e.seq_errors);
        s.stale_deaths.increment(e.stale_deaths);
        if e.life_changed {
            for (g, n) in s.nodes.iter().zip(s.decoder.nodes().by_life()) {
                g.set(n as f64);
            }
            // the table shows it at once
            s.table_at = None;
        }
        Aside {
            skipped: e.skipped,
            commands: e.commands,
        }
    }
}
