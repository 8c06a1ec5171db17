//! `connector = 'mqtt'` as a source: subscribes, decodes messages into micro-batches, and
//! keeps reconnecting (with backoff) whatever the broker does.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{error, warn};
use weir_engine::PipelineError;
use weir_engine::connector::{Connection, Source, SourceOutput, SourceSpec};
use weir_engine::observe::telemetry::SourceTelemetry;
use weir_engine::parse::Options;

use super::client::{self, Event, Message};
use super::decode::{Decoder, Fill, Format};
use super::guard::{Guard, Oversized};
use super::link::Link;
use super::settings::{
    ARRIVAL_TIME, BATCH_LATENCY, BATCH_ROWS, DEAD_LETTER, FORMAT, JSON_PATHS, PAYLOAD_COLUMN,
    REQUIRED, SOURCE_QOS, SOURCE_TOPIC, Settings, TIMESTAMP_UNIT, TOPIC_COLUMN, qos,
};
use super::telemetry::{MESSAGES, SOURCE_CONNECTION_FAILURES};
use super::topic::TopicPattern;
use crate::columns::{EpochUnit, column_index, supported};
use weir_engine::clock::now_nanos;
use weir_engine::dead_letter::{DeadLetterFile, DeadLetters};

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
    dead_letter: Option<DeadLetterFile>,
}

/// The topic patterns and, per pattern, the column each capture fills.
fn topic_patterns(
    o: &Options,
    schema: &SchemaRef,
) -> Result<(Vec<TopicPattern>, Vec<Vec<usize>>), PipelineError> {
    let entry = o.require(&SOURCE_TOPIC)?;
    let mut patterns = Vec::new();
    let mut capture_columns = Vec::new();
    for t in entry.value.split(',').filter(|t| !t.trim().is_empty()) {
        let p = TopicPattern::parse(t).map_err(|m| o.value_error(entry, &m))?;
        let cols = p
            .captures()
            .iter()
            .map(|c| column(o, schema, c, "topic level"))
            .collect::<Result<Vec<_>, _>>()?;
        capture_columns.push(cols);
        patterns.push(p);
    }
    if patterns.is_empty() {
        return Err(o.value_error(entry, "no topic given"));
    }
    Ok((patterns, capture_columns))
}

/// The index of column `name`, or an error saying `what` names no column.
fn column(o: &Options, schema: &SchemaRef, name: &str, what: &str) -> Result<usize, PipelineError> {
    column_index(schema, name)
        .ok_or_else(|| o.error(format!("{what} '{name}' is not a column of this source")))
}

/// How each column is filled: a JSON field (by default the column's name), the topic, the
/// arrival time, or the payload.
fn column_fills(
    o: &Options,
    schema: &SchemaRef,
    format: Format,
    capture_columns: &[Vec<usize>],
) -> Result<Vec<Fill>, PipelineError> {
    let mut fills: Vec<Fill> = schema
        .fields()
        .iter()
        .map(|f| match format {
            Format::Json => Fill::Field(vec![f.name().to_string()]),
            Format::Raw => Fill::Nothing,
        })
        .collect();
    for item in o.optional::<Vec<String>>(&JSON_PATHS)?.unwrap_or_default() {
        let (c, path) = item.split_once('=').ok_or_else(|| {
            o.error(format!(
                "json_paths item '{item}': expected column=path.to.field"
            ))
        })?;
        let i = column(o, schema, c, "json_paths column")?;
        fills[i] = Fill::Field(path.trim().split('.').map(str::to_string).collect());
    }
    if let Some(c) = o.text(&TOPIC_COLUMN) {
        fills[column(o, schema, c, "topic_column")?] = Fill::Topic;
    }
    if let Some(c) = o.text(&ARRIVAL_TIME) {
        let i = column(o, schema, c, "arrival_time")?;
        if !matches!(
            schema.field(i).data_type(),
            arrow::datatypes::DataType::Timestamp(..)
        ) {
            return Err(o.error(format!("arrival_time column '{c}' must be a TIMESTAMP")));
        }
        fills[i] = Fill::Arrival;
    }
    if format == Format::Raw {
        let c = o.text(&PAYLOAD_COLUMN).unwrap_or("payload");
        fills[column(o, schema, c, "payload_column")?] = Fill::Payload;
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
    Ok(fills)
}

impl MqttSource {
    /// Reads and checks the source's options against its declared columns.
    pub fn build(spec: &SourceSpec, o: &Options) -> Result<MqttSource, PipelineError> {
        let settings = Settings::from_options(o, &spec.name)?;
        client::check_tls(&settings).map_err(|e| o.error(format!("{e:#}")))?;
        let schema = spec.schema.clone();
        let (patterns, capture_columns) = topic_patterns(o, &schema)?;
        let qos = qos(o, &SOURCE_QOS)?;
        let format = match o.value::<String>(&FORMAT)?.as_str() {
            "raw" => Format::Raw,
            _ => Format::Json,
        };
        let unit = o
            .parse_with(&TIMESTAMP_UNIT, |v| {
                EpochUnit::parse(v.trim()).ok_or_else(|| "expected s, ms, us or ns".to_string())
            })?
            .unwrap_or(EpochUnit::Millis);
        let fills = column_fills(o, &schema, format, &capture_columns)?;
        let mut required = vec![false; schema.fields().len()];
        if let Some(t) = spec.event_time {
            required[t] = true;
        }
        for c in o.optional::<Vec<String>>(&REQUIRED)?.unwrap_or_default() {
            required[column(o, &schema, &c, "required column")?] = true;
        }
        let batch_rows = o.value::<u64>(&BATCH_ROWS)?.clamp(1, 1 << 20) as usize;
        let batch_latency = o
            .value::<Duration>(&BATCH_LATENCY)?
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
            dead_letter: DeadLetterFile::from_options(o, &DEAD_LETTER)?,
        })
    }
}

/// A message with the time it arrived.
struct Arrived {
    message: Message,
    at_ns: i64,
    /// Set when the packet guard took the message out for its size; the payload is then
    /// its first bytes only.
    oversized: Option<TakenOut>,
}

/// The sizes of a message the packet guard took out.
#[derive(Debug, Clone, Copy)]
struct TakenOut {
    /// The packet after its fixed header.
    packet: usize,
    /// Its payload.
    payload: usize,
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
    telemetry: Arc<SourceTelemetry>,
    mut stop: watch::Receiver<bool>,
) {
    let (oversized_tx, mut oversized) = mpsc::unbounded_channel();
    let started = settings
        .tls
        .as_ref()
        .map(client::tls_config)
        .transpose()
        .and_then(|tls| Guard::start(&settings, tls.map(Arc::new), oversized_tx))
        .and_then(|guard| {
            let c = client::connect_via(&settings, 64, guard.socket())?;
            Ok((guard, c))
        });
    let (guard, (client, mut conn)) = match started {
        Ok(c) => c,
        Err(e) => {
            error!(source = %source, error = %format!("{e:#}"), "mqtt source cannot start");
            return;
        }
    };
    let failures = SOURCE_CONNECTION_FAILURES.counter_with(&[&source]);
    let on_state = Box::new(move |up: bool| {
        telemetry.set_connection(if up { Connection::Up } else { Connection::Down })
    });
    let mut link = Link::new("source", &source, settings.broker(), on_state, failures);
    // messages are handed over a read at a time: one queue operation (and at most one
    // wake-up of the decoder) per read from the network rather than per message
    let mut group = Vec::with_capacity(GROUP);
    let taken_out = |o: Oversized| Arrived {
        message: Message {
            topic: o.topic,
            payload: o.prefix,
        },
        at_ns: now_nanos(),
        oversized: Some(TakenOut {
            packet: o.size,
            payload: o.payload_size,
        }),
    };
    loop {
        while let Ok(o) = oversized.try_recv() {
            group.push(taken_out(o));
        }
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
                Some(o) = oversized.recv() => {
                    group.push(taken_out(o));
                    continue;
                }
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
                    oversized: None,
                });
            }
            Ok(_) => {}
            Err(_) if tx.is_closed() => return,
            Err(mut e) => {
                if let Some(why) = guard.take_error() {
                    e.message = format!("cannot reach the broker {}: {why}", settings.broker());
                }
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
    telemetry: Arc<SourceTelemetry>,
    messages: metrics::Counter,
}

impl Intake<'_> {
    fn take(
        &mut self,
        Arrived {
            message,
            at_ns,
            oversized,
        }: Arrived,
    ) {
        self.messages.increment(1);
        let max = self.source.settings.max_packet_size;
        let topic = message.topic.as_str();
        let skipped = if let Some(TakenOut { packet: n, .. }) = oversized {
            Some((
                "oversized",
                format!(
                    "{n} bytes, more than max_packet_size ({max}): read off the connection and acknowledged without being kept (the first {} bytes are in the dead-letter file, if one is set)",
                    message.payload.len()
                ),
            ))
        } else if message.payload.len() > max {
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
            self.telemetry.skip(reason, topic, &detail);
            if let Some(d) = &mut self.dead {
                let size = oversized.map_or(message.payload.len(), |o| o.payload);
                d.write(
                    &self.source.name,
                    topic,
                    reason,
                    &detail,
                    &message.payload,
                    size,
                );
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
        let telemetry = Arc::clone(out.telemetry());
        telemetry.set_connection(Connection::Down);
        let dead = self
            .dead_letter
            .as_ref()
            .map(DeadLetterFile::open)
            .transpose()?;
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
            Arc::clone(&telemetry),
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
            telemetry: Arc::clone(&telemetry),
            messages: MESSAGES.counter_with(&[&self.name]),
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
        telemetry.set_connection(Connection::Down);
        if let Some(b) = intake.batch()? {
            out.send_last(b).await;
        }
        result
    }
}
