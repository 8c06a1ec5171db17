//! `connector = 'mqtt'` as a source: subscribes, decodes messages into micro-batches, and
//! keeps reconnecting (with backoff) whatever the broker does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{error, warn};
use weir_engine::PipelineError;
use weir_engine::connector::{Connection, Source, SourceHealth, SourceOutput, SourceSpec};
use weir_engine::parse::Options;

use super::client::{self, Event, Message};
use super::decode::{Decoder, Fill, Format};
use super::link::Link;
use super::settings::Settings;
use super::topic::TopicPattern;
use crate::columns::{EpochUnit, column_index, supported};
use crate::dead_letter::DeadLetters;
use weir_engine::clock::now_nanos;

/// Groups of messages waiting between the connection task and the decoder (a group is what
/// one read from the network brought, at most [`GROUP`] messages).
const QUEUE: usize = 64;
/// Messages handed to the decoder in one go at most.
const GROUP: usize = 64;

/// A configured MQTT source.
pub struct MqttSource {
    name: String,
    settings: Settings,
    patterns: Vec<TopicPattern>,
    /// Per pattern: the column index of each of its captures.
    capture_columns: Vec<Vec<usize>>,
    qos: u8,
    schema: SchemaRef,
    format: Format,
    unit: EpochUnit,
    fills: Vec<Fill>,
    required: Vec<bool>,
    batch_rows: usize,
    batch_latency: Duration,
    dead_letter: Option<PathBuf>,
}

/// Comma-separated items of `key`, trimmed, empty ones dropped.
fn list(o: &Options, key: &str) -> Vec<String> {
    o.get(key)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

impl MqttSource {
    /// Reads and checks the source's options against its declared columns.
    pub fn build(spec: &SourceSpec, o: &Options) -> Result<MqttSource, PipelineError> {
        let settings = Settings::from_options(o, &spec.name)?;
        client::check_tls(&settings).map_err(|e| o.error(format!("{e:#}")))?;
        let schema = spec.schema.clone();
        let col = |name: &str, what: &str| {
            column_index(&schema, name)
                .ok_or_else(|| o.error(format!("{what} '{name}' is not a column of this source")))
        };
        let topic_entry = o.entry("topic").ok_or_else(|| {
            o.error("missing required option 'topic' (e.g. 'factory/{line}/{machine}/#')")
        })?;
        let mut patterns = Vec::new();
        let mut capture_columns = Vec::new();
        for t in topic_entry
            .value
            .split(',')
            .filter(|t| !t.trim().is_empty())
        {
            let p = TopicPattern::parse(t).map_err(|m| o.value_error(topic_entry, &m))?;
            let cols = p
                .captures()
                .iter()
                .map(|c| col(c, "topic level"))
                .collect::<Result<Vec<_>, _>>()?;
            capture_columns.push(cols);
            patterns.push(p);
        }
        if patterns.is_empty() {
            return Err(o.value_error(topic_entry, "no topic given"));
        }
        let qos = client::qos_option(o)?;
        let format = match o.choice("format", &["json", "raw"])?.as_deref() {
            Some("raw") => Format::Raw,
            _ => Format::Json,
        };
        let unit = o
            .parsed("timestamp_unit", |v| {
                EpochUnit::parse(v.trim()).ok_or_else(|| "expected s, ms, us or ns".to_string())
            })?
            .unwrap_or(EpochUnit::Millis);
        let default_fill = |name: &str| match format {
            Format::Json => Fill::Field(vec![name.to_string()]),
            Format::Raw => Fill::Nothing,
        };
        let mut fills: Vec<Fill> = schema
            .fields()
            .iter()
            .map(|f| default_fill(f.name()))
            .collect();
        for item in list(o, "json_paths") {
            let (c, path) = item.split_once('=').ok_or_else(|| {
                o.error(format!(
                    "json_paths item '{item}': expected column=path.to.field"
                ))
            })?;
            let i = col(c, "json_paths column")?;
            fills[i] = Fill::Field(path.trim().split('.').map(str::to_string).collect());
        }
        if let Some(c) = o.get("topic_column") {
            fills[col(c, "topic_column")?] = Fill::Topic;
        }
        if let Some(c) = o.get("arrival_time") {
            let i = col(c, "arrival_time")?;
            if !matches!(
                schema.field(i).data_type(),
                arrow::datatypes::DataType::Timestamp(..)
            ) {
                return Err(o.error(format!("arrival_time column '{c}' must be a TIMESTAMP")));
            }
            fills[i] = Fill::Arrival;
        }
        if format == Format::Raw {
            let c = o.get("payload_column").unwrap_or("payload");
            fills[col(c, "payload_column")?] = Fill::Payload;
        }
        for (i, f) in schema.fields().iter().enumerate() {
            if !supported(f.data_type()) {
                return Err(o.error(format!(
                    "column '{}' is {}, which the mqtt source cannot fill (use text, integer, float, boolean, binary or timestamp columns)",
                    f.name(),
                    f.data_type()
                )));
            }
            let captured = capture_columns.iter().flatten().any(|c| *c == i);
            if fills[i] == Fill::Nothing && !captured {
                return Err(o.error(format!(
                    "column '{}' is never filled with format = 'raw' (fill it with payload_column, topic_column, arrival_time or a topic level)",
                    f.name()
                )));
            }
        }
        let mut required = vec![false; schema.fields().len()];
        if let Some(t) = spec.event_time {
            required[t] = true;
        }
        for c in list(o, "required") {
            required[col(&c, "required column")?] = true;
        }
        let batch_rows = o.u64("batch_rows")?.unwrap_or(1000).clamp(1, 1 << 20) as usize;
        let batch_latency = o
            .duration("batch_latency")?
            .unwrap_or(Duration::from_millis(50))
            .max(Duration::from_millis(1));
        Ok(MqttSource {
            name: spec.name.clone(),
            settings,
            patterns,
            capture_columns,
            qos,
            schema,
            format,
            unit,
            fills,
            required,
            batch_rows,
            batch_latency,
            dead_letter: o.get("dead_letter").map(PathBuf::from),
        })
    }
}

/// A message with the time it arrived.
struct Arrived {
    message: Message,
    at_ns: i64,
}

/// Keeps the connection up and forwards messages; returns when the decoder goes away, or
/// once `stop` is set and every message already read from the network is handed over (they
/// are acknowledged to the broker: dropping them would lose them).
async fn connection_task(
    source: String,
    settings: Settings,
    filters: Vec<String>,
    qos: u8,
    tx: mpsc::Sender<Vec<Arrived>>,
    health: Arc<SourceHealth>,
    mut stop: watch::Receiver<bool>,
) {
    let (client, mut conn) = match client::connect(&settings, 64) {
        Ok(c) => c,
        Err(e) => {
            error!(source = %source, error = %format!("{e:#}"), "mqtt source cannot start");
            return;
        }
    };
    let on_state = Box::new(move |up: bool| {
        health.set_connection(if up { Connection::Up } else { Connection::Down })
    });
    let mut link = Link::new("source", &source, settings.broker(), on_state);
    // messages are handed over a read at a time: one queue operation (and at most one
    // wake-up of the decoder) per read from the network rather than per message
    let mut group = Vec::with_capacity(GROUP);
    loop {
        if !group.is_empty()
            && (group.len() >= GROUP || !conn.has_buffered())
            && tx.send(std::mem::take(&mut group)).await.is_err()
        {
            break;
        }
        let polled = if conn.has_buffered() {
            // returns at once: nothing to wait for
            conn.poll(link.broker()).await
        } else {
            // waiting for the network: nothing read is lost by stopping here
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                r = conn.poll(link.broker()) => r,
            }
        };
        match polled {
            Ok(Event::Connected { session_present }) => {
                link.up(session_present);
                if let Err(e) = client.subscribe(&filters, qos) {
                    warn!(source = %source, error = %e, "mqtt subscribe request failed");
                }
            }
            Ok(Event::Message(message)) => {
                if group.capacity() == 0 {
                    group.reserve(GROUP);
                }
                group.push(Arrived {
                    message,
                    at_ns: now_nanos(),
                });
            }
            Ok(_) => {}
            Err(_) if tx.is_closed() => return,
            Err(e) => {
                // what was read before the failure goes on before the backoff wait
                if !group.is_empty() && tx.send(std::mem::take(&mut group)).await.is_err() {
                    break;
                }
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break,
                    () = link.down(e) => {}
                }
            }
        }
    }
    client.disconnect();
}

impl MqttSource {
    /// Per column, the level of `topic` its pattern captures for it; `None` when the topic
    /// matches no pattern (a leftover subscription of a persistent session).
    fn captured<'t>(&self, topic: &'t str) -> Option<Vec<Option<&'t str>>> {
        let mut out = vec![None; self.schema.fields().len()];
        for (p, cols) in self.patterns.iter().zip(&self.capture_columns) {
            if let Some(values) = p.matches(topic) {
                for (c, v) in cols.iter().zip(values) {
                    out[*c] = Some(v);
                }
                return Some(out);
            }
        }
        None
    }
}

/// Decodes arriving messages into the next batch, setting aside the ones it must skip.
struct Intake<'s> {
    source: &'s MqttSource,
    decoder: Decoder,
    dead: Option<DeadLetters>,
    health: Arc<SourceHealth>,
    messages: metrics::Counter,
}

impl Intake<'_> {
    fn take(&mut self, Arrived { message, at_ns }: Arrived) {
        self.messages.increment(1);
        let max = self.source.settings.max_packet_size;
        let topic = message.topic.as_str();
        let skipped = if message.payload.len() > max {
            let n = message.payload.len();
            Some((
                "oversized",
                format!("{n} bytes, more than max_packet_size ({max})"),
            ))
        } else if let Some(captured) = self.source.captured(topic) {
            self.decoder
                .decode(topic, &captured, &message.payload, at_ns)
                .err()
                .map(|s| (s.reason, s.detail))
        } else {
            let why = "the topic matches none of the source's patterns".to_string();
            Some(("unexpected_topic", why))
        };
        if let Some((reason, detail)) = skipped {
            self.health.skip(reason, topic, &detail);
            if let Some(d) = &mut self.dead {
                d.write(&self.source.name, topic, reason, &detail, &message.payload);
            }
        }
    }

    /// The rows decoded so far, if any.
    fn batch(&mut self) -> anyhow::Result<Option<arrow::record_batch::RecordBatch>> {
        if let Some(d) = &mut self.dead {
            d.flush();
        }
        if self.decoder.rows() == 0 {
            return Ok(None);
        }
        Ok(Some(self.decoder.finish()?))
    }
}

#[async_trait]
impl Source for MqttSource {
    fn is_bounded(&self) -> bool {
        false
    }

    async fn run(self: Box<Self>, out: SourceOutput) -> anyhow::Result<()> {
        let health = Arc::clone(out.health());
        health.set_connection(Connection::Down);
        let dead = match &self.dead_letter {
            Some(p) => Some(DeadLetters::open(p)?),
            None => None,
        };
        let (tx, mut rx) = mpsc::channel::<Vec<Arrived>>(QUEUE);
        let (stop_reading, reading_stopped) = watch::channel(false);
        let filters: Vec<String> = self
            .patterns
            .iter()
            .map(|p| p.filter().to_string())
            .collect();
        let conn = tokio::spawn(connection_task(
            self.name.clone(),
            self.settings.clone(),
            filters,
            self.qos,
            tx,
            Arc::clone(&health),
            reading_stopped,
        ));
        let mut intake = Intake {
            source: &self,
            decoder: Decoder::new(
                self.schema.clone(),
                self.format,
                self.unit,
                self.fills.clone(),
                self.required.clone(),
            ),
            dead,
            health: Arc::clone(&health),
            messages: metrics::counter!("weir_mqtt_messages_total", "source" => self.name.clone()),
        };
        let mut deadline: Option<Instant> = None;
        let mut arrived = Vec::with_capacity(QUEUE);
        let mut stop = out.clone();
        let result = loop {
            let flush = tokio::select! {
                biased;
                _ = stop.stopped() => break Ok(()),
                n = rx.recv_many(&mut arrived, QUEUE) => {
                    if n == 0 {
                        break Err(anyhow::anyhow!("the mqtt connection task ended"));
                    }
                    for m in arrived.drain(..).flatten() {
                        intake.take(m);
                    }
                    let rows = intake.decoder.rows();
                    if rows > 0 && deadline.is_none() {
                        deadline = Some(Instant::now() + self.batch_latency);
                    }
                    rows >= self.batch_rows
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => true,
            };
            if flush {
                deadline = None;
                if let Some(b) = intake.batch()?
                    && out.send(b).await.is_err()
                {
                    break Ok(());
                }
            }
        };
        // stop reading, then keep what was already read (the broker considers it delivered)
        let _ = stop_reading.send(true);
        while let Some(group) = rx.recv().await {
            for m in group {
                intake.take(m);
            }
        }
        let _ = conn.await;
        health.set_connection(Connection::Down);
        if let Some(b) = intake.batch()? {
            out.send_last(b).await;
        }
        result
    }
}
