//! `connector = 'mqtt'` as a sink: each row published as one JSON object to a topic filled
//! from the row (`alerts/{machine}`), or, with `format = 'sparkplug_b'`, as Sparkplug B
//! device data of an edge node ([`super::sparkplug::edge`]).

use std::sync::Arc;
#[cfg(feature = "sparkplug")]
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use tokio::task::JoinHandle;
use tracing::warn;
use weir_engine::PipelineError;
#[cfg(feature = "sparkplug")]
use weir_engine::connector::SinkStart;
use weir_engine::connector::{Sink, SinkSpec};
use weir_engine::observe::telemetry::SinkTelemetry;
use weir_engine::parse::Options;

use super::client::{self, Client, Event};
use super::link::Link;
use super::settings::{RETAIN, SINK_FORMAT, SINK_QOS, SINK_TOPIC, Settings, qos};
#[cfg(feature = "sparkplug")]
use super::sparkplug::edge::{Edge, EdgeSetup, asks_rebirth};
use super::telemetry::SINK_CONNECTION_FAILURES;
use super::topic::TopicTemplate;
#[cfg(feature = "sparkplug")]
use weir_engine::sync::lock;

/// How long `close` waits for the broker to confirm what was published.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// A configured MQTT sink.
pub struct MqttSink {
    name: String,
    settings: Settings,
    template: TopicTemplate,
    /// `format = 'sparkplug_b'`: the edge node's settings, and its state once started.
    #[cfg(feature = "sparkplug")]
    sparkplug: Option<EdgeSetup>,
    #[cfg(feature = "sparkplug")]
    edge: Option<Arc<Mutex<Edge>>>,
    /// Wakes the connection task when rows wait (Sparkplug B).
    wake: Arc<tokio::sync::Notify>,
    qos: u8,
    retain: bool,
    running: Option<Running>,
    /// Connection and published messages.
    telemetry: Arc<SinkTelemetry>,
}

/// The connection of a sink that has written.
struct Running {
    client: Client,
    task: JoinHandle<()>,
    /// Publishes sent (QoS 0) or acknowledged (QoS 1, 2).
    delivered: Arc<AtomicU64>,
    published: u64,
    /// Publishes of the connection task (Sparkplug births).
    published_by_task: Arc<AtomicU64>,
}

impl MqttSink {
    /// Reads and checks the sink's options.
    pub fn build(spec: &SinkSpec, o: &Options) -> Result<MqttSink, PipelineError> {
        #[cfg_attr(not(feature = "sparkplug"), allow(unused_mut))]
        let mut settings = Settings::from_options(o, &spec.name)?;
        client::check_tls(&settings).map_err(|e| o.error(format!("{e:#}")))?;
        let sparkplug_b = o.value::<String>(&SINK_FORMAT)? == "sparkplug_b";
        #[cfg(not(feature = "sparkplug"))]
        if sparkplug_b {
            return Err(super::settings::sparkplug_not_in_build(o, &SINK_FORMAT));
        }
        #[cfg(feature = "sparkplug")]
        let sparkplug = super::sparkplug::edge_setup(o, sparkplug_b)?;
        let template = match o.entry(&SINK_TOPIC) {
            Some(t) => TopicTemplate::parse(&t.value).map_err(|m| o.value_error(t, &m))?,
            None => TopicTemplate::parse("unused").expect("a plain topic"),
        };
        #[cfg(feature = "sparkplug")]
        if let Some(s) = &sparkplug {
            settings.will = Some(s.will());
        }
        Ok(MqttSink {
            name: spec.name.clone(),
            settings,
            template,
            #[cfg(feature = "sparkplug")]
            sparkplug,
            #[cfg(feature = "sparkplug")]
            edge: None,
            wake: Arc::new(tokio::sync::Notify::new()),
            qos: qos(o, &SINK_QOS)?,
            retain: o.value(&RETAIN)?,
            running: None,
            telemetry: Arc::clone(&spec.telemetry),
        })
    }

    fn connect(&mut self) -> anyhow::Result<&mut Running> {
        if self.running.is_none() {
            let (client, mut conn) = client::connect(&self.settings, 1024)?;
            let delivered = Arc::new(AtomicU64::new(0));
            let counter = Arc::clone(&delivered);
            let telemetry = Arc::clone(&self.telemetry);
            let mut link = Link::new(
                "sink",
                &self.name,
                self.settings.broker(),
                Box::new(move |up| telemetry.set_connected(up)),
                SINK_CONNECTION_FAILURES.counter_with(&[&self.name]),
            );
            #[cfg(feature = "sparkplug")]
            let edge = self.edge.clone().zip(self.sparkplug.clone());
            #[cfg(feature = "sparkplug")]
            let (publisher, name) = (client.clone(), self.name.clone());
            let published_by_task = Arc::new(AtomicU64::new(0));
            #[cfg(feature = "sparkplug")]
            let task_count = Arc::clone(&published_by_task);
            let wake = Arc::clone(&self.wake);
            #[cfg(feature = "sparkplug")]
            let task_telemetry = Arc::clone(&self.telemetry);
            let task = tokio::spawn(async move {
                loop {
                    #[cfg(feature = "sparkplug")]
                    if let Some((edge, _)) = &edge {
                        let n = drain(edge, &publisher);
                        task_count.fetch_add(n, Ordering::Relaxed);
                        task_telemetry.published(n);
                    }
                    let polled = tokio::select! {
                        r = conn.poll(link.broker()) => r,
                        () = wake.notified() => continue,
                    };
                    match polled {
                        Ok(Event::Connected { session_present }) => {
                            link.up(session_present);
                            #[cfg(feature = "sparkplug")]
                            if let Some((edge, setup)) = &edge {
                                if let Err(e) = publisher.subscribe(&[setup.command_topic()], 0) {
                                    warn!(sink = %name, error = %e, "sparkplug command subscription failed");
                                }
                                lock(edge).born();
                            }
                        }
                        #[cfg(feature = "sparkplug")]
                        Ok(Event::Message(m)) => {
                            if let Some((edge, setup)) = &edge
                                && m.topic == setup.command_topic()
                                && asks_rebirth(&m.payload)
                            {
                                tracing::info!(sink = %name, "sparkplug rebirth asked for: publishing the births again");
                                lock(edge).born();
                            }
                        }
                        Ok(Event::Delivered) => {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            #[cfg(feature = "sparkplug")]
                            if let Some((edge, _)) = &edge {
                                lock(edge).lost();
                            }
                            link.down(e).await
                        }
                    }
                }
            });
            self.running = Some(Running {
                client,
                task,
                delivered,
                published: 0,
                published_by_task,
            });
        }
        Ok(self.running.as_mut().expect("started above"))
    }
}

#[cfg(feature = "sparkplug")]
/// Hands the broker connection what the edge node has waiting, in order, while the
/// request queue has room (QoS 0, as the specification has births and data); returns how
/// many. The lock is never held across an await.
fn drain(edge: &Mutex<Edge>, client: &Client) -> u64 {
    let mut edge = lock(edge);
    let mut n = 0;
    while let Some(m) = edge.next() {
        if !client.try_publish(m.topic, 0, false, Bytes::from(m.payload)) {
            break;
        }
        edge.sent();
        n += 1;
    }
    n
}

/// Column `name` of `batch` as text (case-insensitive name).
fn text_column(batch: &RecordBatch, name: &str) -> anyhow::Result<ArrayRef> {
    let schema = batch.schema();
    let i = schema
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(name))
        .with_context(|| {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            format!(
                "the topic names column '{name}', which the rows do not have (they have: {})",
                have.join(", ")
            )
        })?;
    Ok(arrow::compute::cast(batch.column(i), &DataType::Utf8)?)
}

#[async_trait]
impl Sink for MqttSink {
    #[cfg(feature = "sparkplug")]
    async fn start(&mut self, start: SinkStart) -> anyhow::Result<()> {
        // an edge node is born on connect, with its metrics taken from the columns
        if let Some(setup) = &self.sparkplug {
            let schema = start
                .schema
                .context("a sparkplug_b sink needs the columns of the rows inserted into it")?;
            self.edge = Some(Arc::new(Mutex::new(Edge::new(setup.clone(), &schema)?)));
            self.connect()?;
        }
        Ok(())
    }

    async fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        #[cfg(feature = "sparkplug")]
        if let Some(edge) = self.edge.clone() {
            self.connect()?;
            let dropped = lock(&edge).rows(&batch)?;
            self.wake.notify_one();
            if dropped > 0 {
                self.telemetry.lost_rows(
                    dropped,
                    format!(
                        "more than {} rows waited for the broker, or rows named more than {} devices",
                        super::sparkplug::edge::MAX_WAITING_ROWS,
                        super::sparkplug::edge::MAX_DEVICES
                    ),
                );
            }
            return Ok(());
        }
        let columns: Vec<ArrayRef> = self
            .template
            .columns()
            .iter()
            .map(|c| text_column(&batch, c))
            .collect::<anyhow::Result<_>>()?;
        let mut json = Vec::with_capacity(batch.num_rows() * 96);
        {
            let mut w: arrow::json::LineDelimitedWriter<_> = weir_engine::json::writer(&mut json);
            w.write(&batch)?;
            w.finish()?;
        }
        let (template, qos, retain) = (self.template.clone(), self.qos, self.retain);
        let telemetry = Arc::clone(&self.telemetry);
        let r = self.connect()?;
        let lines = json.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        for (row, line) in lines.enumerate() {
            let values: Vec<&str> = columns
                .iter()
                .map(|c| {
                    let c = c.as_string::<i32>();
                    if c.is_null(row) { "null" } else { c.value(row) }
                })
                .collect();
            let topic = template.render(&values);
            r.client
                .publish(topic, qos, retain, Bytes::copy_from_slice(line))
                .await
                .context("the mqtt connection task ended")?;
            r.published += 1;
            telemetry.published(1);
        }
        Ok(())
    }

    async fn close(&mut self, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        let Some(mut r) = self.running.take() else {
            return Ok(());
        };
        let until = deadline.min(tokio::time::Instant::now() + CLOSE_WAIT);
        let unconfirmed = |r: &Running| {
            (r.published + r.published_by_task.load(Ordering::Relaxed))
                .saturating_sub(r.delivered.load(Ordering::Relaxed))
        };
        #[cfg(feature = "sparkplug")]
        let (edge, wake) = (self.edge.clone(), Arc::clone(&self.wake));
        let mut waited = tokio::time::timeout_at(until, async {
            // Sparkplug: what waits goes out first
            #[cfg(feature = "sparkplug")]
            while edge.as_ref().is_some_and(|e| !lock(e).is_idle()) {
                wake.notify_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            while unconfirmed(&r) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        // an edge node (the one kind of sink with a will) going away says so: the will
        // covers a lost connection only
        if waited.is_ok()
            && let Some(death) = &self.settings.will
            && r.client
                .publish(
                    death.topic.clone(),
                    death.qos,
                    false,
                    Bytes::from(death.payload.clone()),
                )
                .await
                .is_ok()
        {
            r.published += 1;
            waited = tokio::time::timeout_at(until, async {
                while unconfirmed(&r) > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
        }
        r.client.disconnect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.task.abort();
        if waited.is_err() {
            #[cfg(feature = "sparkplug")]
            let missing =
                unconfirmed(&r) as usize + self.edge.as_ref().map_or(0, |e| lock(e).waiting_rows());
            #[cfg(not(feature = "sparkplug"))]
            let missing = unconfirmed(&r) as usize;
            warn!(sink = %self.name, unconfirmed = missing, "mqtt sink closed before the broker confirmed every message");
            anyhow::bail!(
                "{missing} published messages were not confirmed by the broker before closing"
            );
        }
        Ok(())
    }
}
