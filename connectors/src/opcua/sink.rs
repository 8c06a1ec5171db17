//! `connector = 'opcua'` as a sink: each row's mapped columns written to their nodes (Write
//! service) as each node's own DataType, read from the server when the sink connects and
//! checked against the column's type, and optionally a method called per row (Call
//! service) with columns as its input arguments, checked against the method's
//! InputArguments. The nodes and the method are the allowlist: nothing else is ever
//! written. Every value's outcome is counted by its status code's name. The safety rules
//! shared with the Modbus sink are in [`crate::write_back`].

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use opcua::client::{Client, Session};
use opcua::types::{
    AttributeId, CallMethodRequest, DataValue, NodeId, ReadValueId, StatusCode, TimestampsToReturn,
    Variant, WriteValue,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};
use weir_engine::PipelineError;
use weir_engine::backoff::Reconnect;
use weir_engine::connector::{Sink, SinkSpec, SinkStart};
use weir_engine::observe::telemetry::SinkTelemetry;
use weir_engine::parse::Options;

use super::session::{self, OpenError};
use super::settings::ClientSettings;
use super::telemetry::{SINK_CONNECTION_FAILURES, count_sink_request};
use super::write_plan::{Plan, PlanError, WriteSpec};
use crate::owner::Owner;
use crate::write_back::{Safety, Targets};

/// Values one Write (and one verifying Read) carries at most.
const VALUES_PER_WRITE: usize = 1000;
/// Calls one Call request carries at most.
const CALLS_PER_REQUEST: usize = 100;

/// A node, or the method for one value of the method key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// Index into the nodes; the number of nodes for the method.
    index: usize,
    /// The method key's values (empty for nodes).
    key: String,
    /// `ns=2;s=Line1.Speed (speed)`, for logs.
    label: Arc<str>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// A value on its way, or a call's input arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// Written to a node.
    Value(Variant),
    /// A method's input arguments.
    Call(Vec<Variant>),
}

impl fmt::Display for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let typed = |f: &mut fmt::Formatter<'_>, v: &Variant| match v.scalar_type_id() {
            Some(t) => write!(f, "{v} ({t})"),
            None => write!(f, "{v}"),
        };
        match self {
            Outgoing::Value(v) => typed(f, v),
            Outgoing::Call(args) => {
                f.write_str("call(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    typed(f, a)?;
                }
                f.write_str(")")
            }
        }
    }
}

/// The open session and its event loop.
struct Connected {
    session: Arc<Session>,
    events: JoinHandle<()>,
}

/// A configured OPC UA sink.
pub struct OpcUaSink {
    name: String,
    client_settings: ClientSettings,
    writes: WriteSpec,
    targets: Targets<Target, Outgoing>,
    schema: Option<SchemaRef>,
    plan: Option<Plan>,
    client: Option<Client>,
    connected: Option<Connected>,
    reconnect: Reconnect,
    /// No connection attempt before this instant.
    next_attempt: Option<Instant>,
    /// The latest batch that came before the sink could plan (it waits for the connection).
    pending: Option<RecordBatch>,
    telemetry: Arc<SinkTelemetry>,
}

/// The label a metric gets for a failed request: the transient kinds the write record
/// retries, else the status code's name.
fn failure_kind(code: StatusCode) -> &'static str {
    match code {
        StatusCode::BadTimeout | StatusCode::BadRequestTimeout => "timeout",
        StatusCode::BadNotConnected
        | StatusCode::BadServerNotConnected
        | StatusCode::BadSessionClosed
        | StatusCode::BadSessionIdInvalid
        | StatusCode::BadSessionNotActivated
        | StatusCode::BadSecureChannelIdInvalid
        | StatusCode::BadSecureChannelClosed
        | StatusCode::BadTcpEndpointUrlInvalid => "not_connected",
        StatusCode::BadConnectionClosed | StatusCode::BadCommunicationError => "connection_lost",
        c => c.sub_code().name(),
    }
}

impl OpcUaSink {
    /// Reads and checks the sink's options.
    pub fn build(spec: &SinkSpec, o: &Options) -> Result<OpcUaSink, PipelineError> {
        let client_settings = ClientSettings::from_options(o)?;
        Ok(OpcUaSink {
            name: spec.name.clone(),
            client_settings,
            writes: WriteSpec::from_options(o)?,
            targets: Targets::new(Safety::from_options(o)?, Arc::clone(&spec.telemetry)),
            schema: None,
            plan: None,
            client: None,
            connected: None,
            reconnect: Reconnect::default(),
            next_attempt: None,
            pending: None,
            telemetry: Arc::clone(&spec.telemetry),
        })
    }

    /// Connects (if not connected) and, once connected, learns the DataTypes and plans.
    async fn connect_and_plan(&mut self) -> Result<(), PlanError> {
        let session = self.session().await.map_err(PlanError::Unreachable)?;
        if self.plan.is_none()
            && let Some(schema) = self.schema.clone()
        {
            let plan = self.writes.resolve(&session, &schema, &self.name).await?;
            info!(sink = %self.name, url = %self.client_settings.url,
                nodes = ?plan.nodes.iter().map(|n| format!("{} ← {} as {:?}", n.id, schema.field(n.column).name(), n.scalar)).collect::<Vec<_>>(),
                method = ?plan.method.as_ref().map(|m| &m.label),
                "opcua sink knows the server's data types");
            self.plan = Some(plan);
        }
        Ok(())
    }

    /// The connected session, opening one when there is none or its event loop ended
    /// (waiting for the backoff delay after a failed attempt).
    async fn session(&mut self) -> Result<Arc<Session>, String> {
        if let Some(c) = &self.connected {
            if !c.events.is_finished() {
                return Ok(Arc::clone(&c.session));
            }
            self.connected = None;
        }
        if let Some(t) = self.next_attempt
            && Instant::now() < t
        {
            return Err(format!("not connected to {}", self.client_settings.url));
        }
        match self.open().await {
            Ok(c) => {
                let session = Arc::clone(&c.session);
                self.connected = Some(c);
                self.next_attempt = None;
                self.reconnect.reset();
                Ok(session)
            }
            Err(e) => {
                let delay = self.reconnect.next_delay();
                self.next_attempt = Some(Instant::now() + delay);
                warn!(sink = %self.name, url = %self.client_settings.url, error = %e, retry_in = ?delay,
                    "opcua sink cannot connect; values wait (latest wins)");
                Err(e)
            }
        }
    }

    async fn open(&mut self) -> Result<Connected, String> {
        let s = self.client_settings.clone();
        if self.client.is_none() {
            self.client = Some(session::client(&self.name, &s)?);
        }
        let Some(client) = self.client.as_mut() else {
            return Err("no client".into());
        };
        let (session, events) = session::open(
            client,
            &s,
            Owner::Sink(Arc::clone(&self.telemetry)),
            SINK_CONNECTION_FAILURES.counter_with(&[&self.name]),
        )
        .await
        .map_err(|e| match e {
            OpenError::Unreachable(e) | OpenError::Identity(e) => e,
        })?;
        match tokio::time::timeout(s.timeout * 3, session.wait_for_connection()).await {
            Ok(true) => Ok(Connected { session, events }),
            Ok(false) | Err(_) => {
                events.abort();
                Err(format!(
                    "the session with {} did not connect within {:?}",
                    s.url,
                    s.timeout * 3
                ))
            }
        }
    }

    /// Takes each row's values into the targets (refusing what cannot be written).
    fn take_rows(&mut self, plan: &Plan, batch: &RecordBatch) {
        for row in 0..batch.num_rows() {
            for (index, n) in plan.nodes.iter().enumerate() {
                let target = Target {
                    index,
                    key: String::new(),
                    label: Arc::clone(&n.label),
                };
                let col = batch.column(n.column);
                if col.is_null(row) {
                    self.targets.refuse(&target, "null");
                    continue;
                }
                match n.scalar.variant(col, row) {
                    Ok(v) => self.targets.offer(target, Outgoing::Value(v)),
                    Err(why) => self.targets.refuse(&target, why),
                }
            }
            if let Some(m) = &plan.method {
                let key = m
                    .key
                    .iter()
                    .map(|&i| key_text(batch.column(i), row))
                    .collect::<Vec<_>>()
                    .join(",");
                let target = Target {
                    index: plan.nodes.len(),
                    label: if key.is_empty() {
                        m.label.clone().into()
                    } else {
                        format!("{} for {key}", m.label).into()
                    },
                    key,
                };
                let args: Result<Vec<Variant>, String> = m
                    .arguments
                    .iter()
                    .map(|&(i, scalar)| {
                        let col = batch.column(i);
                        if col.is_null(row) {
                            Err(format!(
                                "argument column '{}' is null",
                                batch.schema().field(i).name()
                            ))
                        } else {
                            scalar.variant(col, row)
                        }
                    })
                    .collect();
                match args {
                    Ok(a) => self.targets.offer(target, Outgoing::Call(a)),
                    Err(why) => self.targets.refuse(&target, why),
                }
            }
        }
    }

    /// Plans if it can, then takes the waiting batch and `batch` (if any).
    async fn take(&mut self, batch: Option<RecordBatch>) -> anyhow::Result<()> {
        if self.plan.is_none() {
            if self.schema.is_none() {
                self.schema = batch.as_ref().map(|b| b.schema());
            }
            match self.connect_and_plan().await {
                Ok(()) => {}
                Err(PlanError::Config(e)) => anyhow::bail!(e),
                Err(PlanError::Unreachable(_)) => {}
            }
        }
        let Some(plan) = self.plan.clone() else {
            if let Some(b) = batch
                && let Some(old) = self.pending.replace(b)
            {
                self.telemetry
                    .values_written("superseded", old.num_rows() as u64);
            }
            return Ok(());
        };
        if let Some(p) = self.pending.take() {
            self.take_rows(&plan, &p);
        }
        if let Some(b) = batch {
            self.take_rows(&plan, &b);
        }
        Ok(())
    }

    /// Sends what is due.
    async fn flush(&mut self) {
        if self.targets.safety().dry_run {
            let due = self.targets.due(Instant::now());
            let now = Instant::now();
            for (t, v) in due {
                self.targets.written(t, v, now);
            }
            return;
        }
        if self.targets.next_due().is_none_or(|t| t > Instant::now()) {
            return;
        }
        let session = match self.session().await {
            Ok(s) => s,
            // the values wait for the connection
            Err(_) => return,
        };
        let due = self.targets.due(Instant::now());
        let (values, calls): (Vec<_>, Vec<_>) = due
            .into_iter()
            .partition(|(_, v)| matches!(v, Outgoing::Value(_)));
        for chunk in values.chunks(VALUES_PER_WRITE) {
            self.write_values(&session, chunk.to_vec()).await;
        }
        for chunk in calls.chunks(CALLS_PER_REQUEST) {
            self.call(&session, chunk.to_vec()).await;
        }
    }

    fn node_id(&self, t: &Target) -> NodeId {
        self.plan
            .as_ref()
            .and_then(|p| p.nodes.get(t.index))
            .map(|n| n.id.clone())
            .unwrap_or_default()
    }

    /// One Write of `values`, each value's status counted.
    async fn write_values(&mut self, session: &Session, values: Vec<(Target, Outgoing)>) {
        let writes: Vec<WriteValue> = values
            .iter()
            .map(|(t, v)| WriteValue {
                node_id: self.node_id(t),
                attribute_id: AttributeId::Value as u32,
                index_range: Default::default(),
                value: DataValue {
                    value: match v {
                        Outgoing::Value(x) => Some(x.clone()),
                        Outgoing::Call(_) => None,
                    },
                    ..Default::default()
                },
            })
            .collect();
        count_sink_request(&self.name, "Write");
        let results = session.write(&writes).await;
        let now = Instant::now();
        let statuses = match results {
            Ok(r) if r.len() == values.len() => r,
            Ok(r) => {
                let detail = format!("{} results for {} values", r.len(), values.len());
                for (t, v) in values {
                    self.targets.failed(t, v, "BadUnexpectedError", &detail);
                }
                return;
            }
            Err(e) => {
                let kind = failure_kind(e.status());
                let detail = session::explain(e.status(), &self.client_settings);
                for (t, v) in values {
                    self.targets.failed(t, v, kind, &detail);
                }
                return;
            }
        };
        let mut good = Vec::new();
        for ((t, v), status) in values.into_iter().zip(statuses) {
            if status.is_good() {
                good.push((t, v));
            } else {
                let name = status.sub_code().name();
                self.targets
                    .failed(t, v, name, format!("the server answered {name}"));
            }
        }
        if self.targets.safety().verify && !good.is_empty() {
            self.verify(session, &good).await;
        }
        for (t, v) in good {
            self.targets.written(t, v, now);
        }
    }

    /// Reads `written` back and counts values that differ.
    async fn verify(&mut self, session: &Session, written: &[(Target, Outgoing)]) {
        let reads: Vec<ReadValueId> = written
            .iter()
            .map(|(t, _)| ReadValueId::from(self.node_id(t)))
            .collect();
        count_sink_request(&self.name, "Read");
        match session.read(&reads, TimestampsToReturn::Neither, 0.0).await {
            Ok(found) => {
                for ((t, v), d) in written.iter().zip(found) {
                    let back = d.value.unwrap_or_default();
                    if Outgoing::Value(back.clone()) != *v {
                        self.targets.mismatch(t, Outgoing::Value(back));
                    }
                }
            }
            Err(e) => {
                warn!(sink = %self.name, error = %e, "opcua sink could not read back what it wrote");
            }
        }
    }

    /// One Call request of `calls`, each call's status counted.
    async fn call(&mut self, session: &Session, calls: Vec<(Target, Outgoing)>) {
        let Some(m) = self.plan.as_ref().and_then(|p| p.method.clone()) else {
            return;
        };
        let requests: Vec<CallMethodRequest> = calls
            .iter()
            .map(|(_, v)| CallMethodRequest {
                object_id: m.object.clone(),
                method_id: m.method.clone(),
                input_arguments: match v {
                    Outgoing::Call(a) => Some(a.clone()),
                    Outgoing::Value(_) => None,
                },
            })
            .collect();
        count_sink_request(&self.name, "Call");
        let now = Instant::now();
        match session.call(requests).await {
            Ok(results) if results.len() == calls.len() => {
                for ((t, v), r) in calls.into_iter().zip(results) {
                    if r.status_code.is_good() {
                        self.targets.written(t, v, now);
                    } else {
                        let name = r.status_code.sub_code().name();
                        let args: Vec<&str> = r
                            .input_argument_results
                            .iter()
                            .flatten()
                            .map(|s| s.sub_code().name())
                            .collect();
                        self.targets.failed(
                            t,
                            v,
                            name,
                            format!(
                                "the server answered {name} (arguments: {})",
                                args.join(", ")
                            ),
                        );
                    }
                }
            }
            Ok(results) => {
                let detail = format!("{} results for {} calls", results.len(), calls.len());
                for (t, v) in calls {
                    self.targets.failed(t, v, "BadUnexpectedError", &detail);
                }
            }
            Err(e) => {
                let kind = failure_kind(e.status());
                let detail = session::explain(e.status(), &self.client_settings);
                for (t, v) in calls {
                    self.targets.failed(t, v, kind, &detail);
                }
            }
        }
    }
}

/// A key column's value as text (`null` for a null).
fn key_text(col: &ArrayRef, row: usize) -> String {
    if col.is_null(row) {
        return "null".into();
    }
    arrow::util::display::array_value_to_string(col, row).unwrap_or_else(|_| "?".into())
}

#[async_trait]
impl Sink for OpcUaSink {
    fn check_columns(&self, columns: &SchemaRef) -> Result<(), String> {
        self.writes.check(columns)
    }

    fn delivery(&self) -> &'static str {
        "at most once per value, latest wins"
    }

    async fn start(&mut self, start: SinkStart) -> anyhow::Result<()> {
        self.targets.set_pipelines(&start.inputs);
        if start.no_writes {
            self.targets.forbid_writes();
        }
        self.schema = start.schema.clone();
        if let Some(schema) = &self.schema {
            self.writes.check(schema).map_err(anyhow::Error::msg)?;
        }
        let s = self.targets.safety();
        info!(sink = %self.name, url = %self.client_settings.url, policy = %self.client_settings.policy,
            identity = ?self.client_settings.identity, nodes = self.writes.nodes.len(), method = self.writes.method.is_some(),
            dry_run = s.dry_run, no_writes = start.no_writes, write_on_change = s.write_on_change,
            min_interval = ?s.min_interval, verify = s.verify,
            "opcua sink starting{}", if s.dry_run { " (dry run: nothing is written)" } else { "" });
        match self.connect_and_plan().await {
            Ok(()) => Ok(()),
            Err(PlanError::Config(e)) => Err(anyhow::anyhow!(e)),
            Err(PlanError::Unreachable(e)) => {
                warn!(sink = %self.name, url = %self.client_settings.url, error = %e,
                    "opcua sink starts without its server: the data types are checked once it connects");
                Ok(())
            }
        }
    }

    async fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        self.take(Some(batch)).await?;
        self.flush().await;
        Ok(())
    }

    async fn tick(&mut self) -> anyhow::Result<()> {
        if self.plan.is_none() {
            self.take(None).await?;
        }
        self.flush().await;
        Ok(())
    }

    async fn close(&mut self, _deadline: Instant) -> anyhow::Result<()> {
        self.flush().await;
        self.targets.abandon_waiting();
        if let Some(p) = self.pending.take() {
            self.telemetry
                .values_written("not_sent", p.num_rows() as u64);
        }
        if let Some(c) = self.connected.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), c.session.disconnect())
                .await;
            c.events.abort();
        }
        Ok(())
    }
}
