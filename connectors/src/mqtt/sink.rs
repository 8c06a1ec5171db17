//! `connector = 'mqtt'` as a sink: each row published as one JSON object to a topic filled
//! from the row (`alerts/{machine}`).

use std::sync::Arc;
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
use weir_engine::connector::{Sink, SinkSpec};
use weir_engine::observe::telemetry::SinkTelemetry;
use weir_engine::parse::Options;

use super::client::{self, Client, Event};
use super::link::Link;
use super::settings::{RETAIN, SINK_QOS, SINK_TOPIC, Settings, qos};
use super::telemetry::SINK_CONNECTION_FAILURES;
use super::topic::TopicTemplate;

/// How long `close` waits for the broker to confirm what was published.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// A configured MQTT sink.
pub struct MqttSink {
    name: String,
    settings: Settings,
    template: TopicTemplate,
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
}

impl MqttSink {
    /// Reads and checks the sink's options.
    pub fn build(spec: &SinkSpec, o: &Options) -> Result<MqttSink, PipelineError> {
        let settings = Settings::from_options(o, &spec.name)?;
        client::check_tls(&settings).map_err(|e| o.error(format!("{e:#}")))?;
        let t = o.require(&SINK_TOPIC)?;
        let template = TopicTemplate::parse(&t.value).map_err(|m| o.value_error(t, &m))?;
        Ok(MqttSink {
            name: spec.name.clone(),
            settings,
            template,
            qos: qos(o, &SINK_QOS)?,
            retain: o.value(&RETAIN)?,
            running: None,
            telemetry: Arc::clone(&spec.telemetry),
        })
    }

    fn start(&mut self) -> anyhow::Result<&mut Running> {
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
            let task = tokio::spawn(async move {
                loop {
                    match conn.poll(link.broker()).await {
                        Ok(Event::Connected { session_present }) => link.up(session_present),
                        Ok(Event::Delivered) => {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => link.down(e).await,
                    }
                }
            });
            self.running = Some(Running {
                client,
                task,
                delivered,
                published: 0,
            });
        }
        Ok(self.running.as_mut().expect("started above"))
    }
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
    async fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
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
        let r = self.start()?;
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
        let Some(r) = self.running.take() else {
            return Ok(());
        };
        let until = deadline.min(tokio::time::Instant::now() + CLOSE_WAIT);
        let waited = tokio::time::timeout_at(until, async {
            while r.delivered.load(Ordering::Relaxed) < r.published {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        r.client.disconnect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.task.abort();
        if waited.is_err() {
            let missing = r.published - r.delivered.load(Ordering::Relaxed);
            warn!(sink = %self.name, unconfirmed = missing, "mqtt sink closed before the broker confirmed every message");
            anyhow::bail!(
                "{missing} published messages were not confirmed by the broker before closing"
            );
        }
        Ok(())
    }
}
