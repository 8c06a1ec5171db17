//! `connector = 'mqtt'` as a source: subscribes, decodes messages into micro-batches, and
//! keeps reconnecting (with backoff) whatever the broker does.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};
use weir_engine::PipelineError;
use weir_engine::connector::{Connection, Progress, Source, SourceOutput, SourceSpec, SourceStart};
use weir_engine::observe::telemetry::SourceTelemetry;
use weir_engine::parse::Options;

use super::acks::{Ack, Acks, Seen, digest};
use super::client::{self, Event, Message};
use super::decode::{Decoder, Fill, Format};
use super::guard::{Guard, Oversized};
use super::link::Link;
#[cfg(feature = "sparkplug")]
use super::payloads::Sparkplug;
use super::payloads::{Command, Payloads};
use super::settings::{
    ARRIVAL_TIME, BATCH_LATENCY, BATCH_ROWS, DEAD_LETTER, FORMAT, JSON_PATHS, MAX_UNACKED,
    PAYLOAD_COLUMN, Protocol, REQUIRED, SOURCE_QOS, SOURCE_TOPIC, Settings, TIMESTAMP_UNIT,
    TOPIC_COLUMN, Will, qos,
};
#[cfg(feature = "sparkplug")]
use super::sparkplug::decode::SparkplugDecoder;
#[cfg(feature = "sparkplug")]
use super::sparkplug::{self as spb, Setup};
use super::telemetry::{EARLY_CHECKPOINTS, MESSAGES, REDELIVERED, SOURCE_CONNECTION_FAILURES};
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
    /// `format = 'sparkplug_b'`.
    #[cfg(feature = "sparkplug")]
    sparkplug: Option<Setup>,
    /// The primary host's birth (`host_id`), published on each connect.
    host_birth: Option<Will>,
    unit: EpochUnit,
    fills: Vec<Fill>,
    required: Vec<bool>,
    batch_rows: usize,
    batch_latency: Duration,
    dead_letter: Option<DeadLetterFile>,
    /// The broker's limit of unacknowledged messages (`max_unacked`).
    max_unacked: usize,
    /// With checkpoints: acknowledge messages once a checkpoint covers them; the digests a
    /// restored checkpoint covers.
    exactly_once: Option<Vec<u64>>,
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
        let format_name = o.value::<String>(&FORMAT)?;
        let format = match format_name.as_str() {
            "raw" => Format::Raw,
            _ => Format::Json,
        };
        #[cfg(not(feature = "sparkplug"))]
        if format_name == "sparkplug_b" {
            return Err(super::settings::sparkplug_not_in_build(o, &FORMAT));
        }
        #[cfg(feature = "sparkplug")]
        let sparkplug = Setup::from_options(o, &schema, format_name == "sparkplug_b")?;
        #[cfg(feature = "sparkplug")]
        let mut settings = settings;
        #[cfg(feature = "sparkplug")]
        let host_birth = sparkplug
            .as_ref()
            .and_then(|s| s.host_id.as_deref())
            .map(|id| {
                // Sparkplug 3.0: the death (the will) carries the birth's timestamp
                let now_ms = now_nanos() / 1_000_000;
                settings.will = Some(spb::host_state(id, false, now_ms));
                spb::host_state(id, true, now_ms)
            });
        let unit = o
            .parse_with(&TIMESTAMP_UNIT, |v| {
                EpochUnit::parse(v.trim()).ok_or_else(|| "expected s, ms, us or ns".to_string())
            })?
            .unwrap_or(EpochUnit::Millis);
        #[cfg(not(feature = "sparkplug"))]
        let host_birth = None;
        #[cfg(feature = "sparkplug")]
        let fills = match sparkplug {
            // the decoder fills the columns by their names
            Some(_) => Vec::new(),
            None => column_fills(o, &schema, format, &capture_columns)?,
        };
        #[cfg(not(feature = "sparkplug"))]
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
        let max_unacked = o.value::<u64>(&MAX_UNACKED)?.clamp(1, u16::MAX as u64) as usize;
        Ok(MqttSource {
            name: spec.name.clone(),
            settings,
            patterns,
            capture_columns,
            qos,
            schema,
            format,
            host_birth,
            #[cfg(feature = "sparkplug")]
            sparkplug,
            unit,
            fills,
            required,
            batch_rows,
            batch_latency,
            dead_letter: DeadLetterFile::from_options(o, &DEAD_LETTER)?,
            max_unacked,
            exactly_once: None,
        })
    }
}

/// A message with the time it arrived.
struct Arrived {
    message: Message,
    at_ns: i64,
    /// The connection it came on (counting reconnects).
    generation: u64,
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

/// Sends the acknowledgements that are due: those of the current connection (messages of
/// an earlier one are delivered again and acknowledged then); the rest waits while the
/// client's request queue is full.
fn send_acks(client: &client::Client, due: &mut std::collections::VecDeque<Ack>, generation: u64) {
    while let Some(a) = due.front() {
        if a.generation == generation && !client.ack(a.pkid, a.qos) {
            return;
        }
        due.pop_front();
    }
}

/// Keeps the connection up and forwards messages; returns when the decoder goes away, or
/// once `stop` is set and every message already read from the network is handed over
/// (without exactly-once acknowledgements they are acknowledged to the broker: dropping
/// them would lose them). Acknowledgements the decoder sends on `acks` go out here.
#[allow(clippy::too_many_arguments)]
async fn connection_task(
    source: String,
    settings: Settings,
    filters: Vec<String>,
    qos: u8,
    tx: mpsc::Sender<Vec<Arrived>>,
    mut acks: mpsc::UnboundedReceiver<Vec<Ack>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    host_birth: Option<Will>,
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
            let requests = if settings.manual_acks { 256 } else { 64 };
            let c = client::connect_via(&settings, requests, guard.socket())?;
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
    let mut generation = 0;
    let mut due = std::collections::VecDeque::new();
    let mut acks_open = true;
    // the guard acknowledged what it took out: it is not acknowledged again
    let taken_out = |o: Oversized, generation: u64| Arrived {
        message: Message {
            topic: o.topic,
            payload: o.prefix,
            pkid: 0,
            qos: 0,
            dup: false,
        },
        at_ns: now_nanos(),
        generation,
        oversized: Some(TakenOut {
            packet: o.size,
            payload: o.payload_size,
        }),
    };
    let mut to_publish: Vec<Command> = Vec::new();
    loop {
        send_acks(&client, &mut due, generation);
        for c in to_publish.drain(..) {
            // QoS 0, as Sparkplug commands go; lost with the connection, asked again later
            match client
                .publish(c.topic.clone(), 0, false, c.payload.into())
                .await
            {
                Ok(()) => info!(source = %source, topic = %c.topic, "sparkplug rebirth requested"),
                Err(e) => {
                    warn!(source = %source, topic = %c.topic, error = %e, "sparkplug command not published")
                }
            }
        }
        while let Ok(o) = oversized.try_recv() {
            group.push(taken_out(o, generation));
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
                    group.push(taken_out(o, generation));
                    continue;
                }
                a = acks.recv(), if acks_open => {
                    match a {
                        Some(a) => due.extend(a),
                        None => acks_open = false,
                    }
                    continue;
                }
                Some(c) = commands.recv() => {
                    to_publish.push(c);
                    continue;
                }
                r = conn.poll(link.broker()) => r,
            }
        };
        match polled {
            Ok(Event::Connected { session_present }) => {
                generation += 1;
                link.up(session_present);
                if let Err(e) = client.subscribe(&filters, qos) {
                    warn!(source = %source, error = %e, "mqtt subscribe request failed");
                }
                if let Some(b) = &host_birth
                    && let Err(e) = client
                        .publish(b.topic.clone(), b.qos, b.retain, b.payload.clone().into())
                        .await
                {
                    warn!(source = %source, error = %e, "sparkplug host state not published");
                }
            }
            Ok(Event::Message(message)) => {
                if group.capacity() == 0 {
                    group.reserve(GROUP);
                }
                group.push(Arrived {
                    message,
                    at_ns: now_nanos(),
                    generation,
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
    // a primary host says it is going (the will covers a lost connection only)
    let (up, broker) = (link.is_up(), link.broker().to_string());
    if let Some(death) = &settings.will
        && up
    {
        let published = client
            .publish(
                death.topic.clone(),
                death.qos,
                death.retain,
                death.payload.clone().into(),
            )
            .await;
        if published.is_ok() {
            // sent by polling; whatever else arrives meanwhile is not taken any more
            let _ = tokio::time::timeout(Duration::from_millis(300), async {
                while conn.poll(&broker).await.is_ok() {}
            })
            .await;
        }
    }
    client.disconnect();
}

impl MqttSource {
    /// The decoder of this source's format.
    fn payloads(&self) -> Payloads {
        #[cfg(feature = "sparkplug")]
        if let Some(setup) = &self.sparkplug {
            return Payloads::Sparkplug(Box::new(Sparkplug::new(
                SparkplugDecoder::new(self.schema.clone(), setup.parts.clone(), setup.behaviour),
                &self.name,
            )));
        }
        Payloads::Plain(Decoder::new(
            self.schema.clone(),
            self.format,
            self.unit,
            self.fills.clone(),
            self.required.clone(),
        ))
    }

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
    decoder: Payloads,
    /// Messages to publish (Sparkplug B rebirth requests), to the connection task.
    commands: mpsc::UnboundedSender<Command>,
    dead: Option<DeadLetters>,
    telemetry: Arc<SourceTelemetry>,
    messages: metrics::Counter,
    redelivered: metrics::Counter,
    /// Exactly-once acknowledgements: the bookkeeping, and the way to the connection task.
    acks: Option<Acks>,
    ack_tx: mpsc::UnboundedSender<Vec<Ack>>,
}

impl Intake<'_> {
    fn take(
        &mut self,
        Arrived {
            message,
            at_ns,
            generation,
            oversized,
        }: Arrived,
    ) {
        self.messages.increment(1);
        let max = self.source.settings.max_packet_size;
        let topic = message.topic.as_str();
        let tracked = match &mut self.acks {
            Some(acks) if message.qos > 0 && oversized.is_none() => {
                let d = digest(message.pkid, topic, &message.payload);
                let ack = Ack {
                    pkid: message.pkid,
                    qos: message.qos,
                    generation,
                };
                let seen = if message.dup {
                    acks.redelivered(d, generation)
                } else {
                    Seen::New
                };
                match seen {
                    Seen::New => Some((d, ack)),
                    Seen::Covered => {
                        self.redelivered.increment(1);
                        let _ = self.ack_tx.send(vec![ack]);
                        return;
                    }
                    Seen::InFlight => {
                        self.redelivered.increment(1);
                        return;
                    }
                }
            }
            _ => None,
        };
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
        match (tracked, &mut self.acks) {
            // a skipped message adds nothing to wait for
            (Some((_, ack)), Some(_)) if skipped.is_some() => {
                let _ = self.ack_tx.send(vec![ack]);
            }
            (Some((d, ack)), Some(acks)) => acks.taken(d, ack),
            _ => {}
        }
        let aside = self.decoder.aside();
        self.decoder.publish_tables(&self.telemetry);
        for c in aside.commands {
            let _ = self.commands.send(c);
        }
        // the message skipped whole, or metrics of it left out (Sparkplug B)
        let dead = match skipped {
            Some((reason, detail)) => {
                self.telemetry.skip(reason, topic, &detail);
                Some((reason, detail))
            }
            None => {
                for s in &aside.skipped {
                    self.telemetry.skip(s.reason, topic, &s.detail);
                }
                aside.skipped.first().map(|first| {
                    let all: Vec<&str> = aside.skipped.iter().map(|s| s.detail.as_str()).collect();
                    (first.reason, all.join("; "))
                })
            }
        };
        if let (Some((reason, detail)), Some(d)) = (dead, &mut self.dead) {
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

    /// The rows decoded so far, if any, with the digests of their messages.
    fn batch(&mut self) -> anyhow::Result<(Option<arrow::record_batch::RecordBatch>, Progress)> {
        if let Some(d) = &mut self.dead {
            d.flush();
        }
        let progress = Progress {
            offset: None,
            delivered: self
                .acks
                .as_ref()
                .map(|a| a.current().to_vec())
                .unwrap_or_default(),
        };
        if self.decoder.rows() == 0 {
            if let Some(acks) = &mut self.acks {
                let now = acks.without_rows();
                if !now.is_empty() {
                    let _ = self.ack_tx.send(now);
                }
            }
            return Ok((None, progress));
        }
        Ok((Some(self.decoder.finish()?), progress))
    }

    /// The batch went out as number `n`.
    fn sent(&mut self, n: u64) {
        if let Some(acks) = &mut self.acks {
            acks.sent(n);
        }
    }

    /// A complete checkpoint covers the batches up to `n`: their messages are acknowledged.
    fn committed(&mut self, n: u64) {
        if let Some(acks) = &mut self.acks {
            let due = acks.committed(n);
            if !due.is_empty() {
                let _ = self.ack_tx.send(due);
            }
        }
    }

    fn unacked(&self) -> usize {
        self.acks.as_ref().map_or(0, Acks::unacked)
    }
}

/// When an exactly-once source asks for a checkpoint before the interval.
struct EarlyCheckpoints {
    /// Unacknowledged messages at which to ask (half of `max_unacked`, or what the broker
    /// showed to be its limit).
    threshold: usize,
    /// The broker's limit of unacknowledged messages (`max_unacked`, or what it showed).
    limit: usize,
    /// The waiting messages were at the limit when the last messages arrived.
    full: bool,
    /// Asked since the last commit.
    asked: bool,
    /// Unacknowledged messages wait and none arrived since the last batch: the broker may
    /// be holding back at its limit.
    stall_at: Option<Instant>,
    stall_after: Duration,
    counter: metrics::Counter,
    /// The unacknowledged count of the last stalls in a row with the same count.
    stalls: (usize, u32),
}

impl EarlyCheckpoints {
    /// Messages arrived and `unacked` wait: true when the batch must go at once — it brings
    /// them to the threshold (a checkpoint is about to be asked for), or to the broker's
    /// limit (a broker that holds to it sends no more until checkpoints cover them). Once per
    /// reach, so a broker that lets more through does not get one batch per message.
    fn flush_now(&mut self, unacked: usize) -> bool {
        let full = unacked >= self.limit;
        let reached = full && !self.full;
        self.full = full;
        reached || (!self.asked && unacked >= self.threshold)
    }

    async fn ask(&mut self, out: &SourceOutput) {
        if !self.asked {
            self.asked = true;
            self.counter.increment(1);
            out.want_checkpoint().await;
        }
    }

    /// After a batch went out with `unacked` messages waiting.
    async fn after_batch(&mut self, unacked: usize, out: &SourceOutput) {
        self.stall_at = (unacked > 0).then(|| Instant::now() + self.stall_after);
        if unacked >= self.threshold {
            self.ask(out).await;
        }
    }

    /// A checkpoint completed with `unacked` messages still waiting (they are acknowledged
    /// once the next one covers them too): ask again at the threshold, or watch for a stall.
    async fn committed(&mut self, unacked: usize, out: &SourceOutput) {
        self.asked = false;
        self.after_batch(unacked, out).await;
    }

    /// Nothing arrived for a while with `unacked` messages waiting: quiet input, or the
    /// broker stopped at its limit. A checkpoint is asked for; when it stops three times in
    /// a row at the same number, lower than `max_unacked` says, that is its limit.
    async fn stalled(&mut self, source: &str, unacked: usize, out: &SourceOutput) {
        self.stall_at = None;
        if unacked == 0 || self.asked {
            return;
        }
        self.stalls = match self.stalls {
            (n, k) if n == unacked => (n, k + 1),
            _ => (unacked, 1),
        };
        if self.stalls.1 == 3 && unacked < self.threshold {
            info!(
                source,
                unacked,
                max_unacked_half = self.threshold,
                "the broker stops sending at fewer unacknowledged messages than max_unacked says: asking for checkpoints at that number from now on (set max_unacked to the broker's max_inflight_messages)"
            );
            self.threshold = unacked;
            self.limit = unacked;
        }
        self.ask(out).await;
    }
}

#[async_trait]
impl Source for MqttSource {
    fn is_bounded(&self) -> bool {
        false
    }

    fn resumes(&self) -> bool {
        self.qos > 0 && !self.settings.clean_session
    }

    fn prepare(&mut self, start: SourceStart) -> anyhow::Result<()> {
        self.exactly_once = (start.checkpoints && self.resumes())
            .then(|| start.resume.map(|r| r.delivered).unwrap_or_default());
        self.settings.manual_acks = self.exactly_once.is_some();
        if self.exactly_once.is_some() && self.settings.protocol == Protocol::V5 {
            self.settings.receive_maximum = Some(self.max_unacked as u16);
        }
        Ok(())
    }

    async fn run(mut self: Box<Self>, out: SourceOutput) -> anyhow::Result<()> {
        let telemetry = Arc::clone(out.telemetry());
        telemetry.set_connection(Connection::Down);
        let dead = self
            .dead_letter
            .as_ref()
            .map(DeadLetterFile::open)
            .transpose()?;
        let (tx, mut rx) = mpsc::channel::<Vec<Arrived>>(QUEUE);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (command_tx, command_rx) = mpsc::unbounded_channel();
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
            ack_rx,
            command_rx,
            self.host_birth.clone(),
            Arc::clone(&telemetry),
            reading_stopped,
        ));
        let covered = self.exactly_once.take();
        let source: &MqttSource = &self;
        let mut intake = Intake {
            source,
            decoder: source.payloads(),
            commands: command_tx,
            dead,
            telemetry: Arc::clone(&telemetry),
            messages: MESSAGES.counter_with(&[&source.name]),
            redelivered: REDELIVERED.counter_with(&[&source.name]),
            acks: covered.map(Acks::new),
            ack_tx,
        };
        let mut early = EarlyCheckpoints {
            threshold: (source.max_unacked / 2).max(1),
            limit: source.max_unacked.max(1),
            full: false,
            asked: false,
            stall_at: None,
            stall_after: (source.batch_latency * 4).max(Duration::from_millis(200)),
            counter: EARLY_CHECKPOINTS.counter_with(&[&source.name]),
            stalls: (0, 0),
        };
        let exactly_once = intake.acks.is_some();
        let mut committed = out.committed();
        let mut deadline: Option<Instant> = None;
        let mut arrived = Vec::with_capacity(QUEUE);
        let mut stop = out.clone();
        // the Sparkplug node table catches up with the last messages
        let mut table_tick = tokio::time::interval(Duration::from_secs(1));
        let has_tables = intake.decoder.keeps_tables();
        let result = loop {
            let flush = tokio::select! {
                biased;
                _ = stop.stopped() => break Ok(()),
                _ = table_tick.tick(), if has_tables => {
                    intake.decoder.publish_tables(&intake.telemetry);
                    false
                }
                r = committed.changed(), if exactly_once => {
                    if r.is_ok() {
                        let n = *committed.borrow_and_update();
                        intake.committed(n);
                        early.committed(intake.unacked(), &out).await;
                    }
                    false
                }
                n = rx.recv_many(&mut arrived, QUEUE) => {
                    if n == 0 {
                        break Err(anyhow::anyhow!("the mqtt connection task ended"));
                    }
                    for m in arrived.drain(..).flatten() {
                        intake.take(m);
                    }
                    early.stall_at = None;
                    let rows = intake.decoder.rows();
                    if rows > 0 && deadline.is_none() {
                        deadline = Some(Instant::now() + source.batch_latency);
                    }
                    rows >= source.batch_rows
                        || (exactly_once && early.flush_now(intake.unacked()))
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => true,
                _ = tokio::time::sleep_until(early.stall_at.unwrap_or_else(Instant::now)), if early.stall_at.is_some() => {
                    early.stalled(&source.name, intake.unacked(), &out).await;
                    false
                }
            };
            if flush {
                deadline = None;
                let (batch, progress) = intake.batch()?;
                if let Some(b) = batch {
                    match out.send_at(b, progress).await {
                        Ok(n) => intake.sent(n),
                        Err(_) => break Ok(()),
                    }
                }
                if exactly_once {
                    early.after_batch(intake.unacked(), &out).await;
                }
            }
        };
        // stop reading, then keep what was already read (the broker considers it delivered,
        // or, with exactly-once acknowledgements, delivers it again: the final checkpoint
        // tells which ones are covered)
        let _ = stop_reading.send(true);
        while let Some(group) = rx.recv().await {
            for m in group {
                intake.take(m);
            }
        }
        let _ = conn.await;
        telemetry.set_connection(Connection::Down);
        let (batch, progress) = intake.batch()?;
        if let Some(b) = batch {
            out.send_last(b, progress).await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn early(max_unacked: usize) -> EarlyCheckpoints {
        EarlyCheckpoints {
            threshold: max_unacked / 2,
            limit: max_unacked,
            full: false,
            asked: false,
            stall_at: None,
            stall_after: Duration::from_millis(200),
            counter: metrics::Counter::noop(),
            stalls: (0, 0),
        }
    }

    #[test]
    fn a_batch_goes_at_once_at_the_threshold_and_at_each_reach_of_the_limit() {
        let mut e = early(20);
        assert!(!e.flush_now(9));
        assert!(
            e.flush_now(10),
            "the threshold: a checkpoint is about to be asked for"
        );
        e.asked = true;
        assert!(!e.flush_now(15), "asked already: messages batch up");
        assert!(e.flush_now(20), "the limit: a strict broker sends no more");
        // a broker that lets more through than its limit does not get a batch per message
        assert!(!e.flush_now(21));
        assert!(!e.flush_now(400));
        // acknowledgements bring the count below the limit: the next reach flushes again
        assert!(!e.flush_now(12));
        assert!(e.flush_now(20));
        e.asked = false;
        assert!(
            e.flush_now(20),
            "not asked since the last commit, at the threshold"
        );
    }
}
