//! `connector = 'opcua'` as a source: connects (retrying with backoff while the server is
//! away), resolves the nodes, then subscribes or polls and turns values into long or wide
//! rows. The session reconnects by itself; the source never gives up on its own.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use opcua::client::Session;
use opcua::types::{DataValue, ReadValueId, StatusCode, TimestampsToReturn};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};
use weir_engine::PipelineError;
use weir_engine::backoff::Reconnect;
use weir_engine::clock::now_nanos;
use weir_engine::connector::{Connection, Source, SourceOutput, SourceSpec};
use weir_engine::observe::telemetry::SourceTelemetry;
use weir_engine::parse::Options;

use super::instants::Instants;
use super::nodes::{self, Listed, Node, NodeSpec};
use super::rows::{Layout, Rows, long_layout, wide_layout};
use super::session;
use super::settings::{BATCH_LATENCY, BROWSE, Mode, NODES, SHAPE, Settings, TIME_COLUMN};
use super::subscribe::{self, Forward, Notification, Parameters};
use super::telemetry::{CONNECTION_FAILURES, POLLS, VALUES, VALUES_FILTERED};
use super::values::{ValueColumn, unix_nanos};
use crate::columns::column_index;
use crate::owner::Owner;

/// Rows sent in one batch at most.
const BATCH_ROWS: usize = 8192;
/// Nodes per Read request at most (a common server limit).
const NODES_PER_READ: usize = 10_000;

/// The row shape chosen.
#[derive(Debug, Clone)]
enum Shape {
    Long(Layout),
    Wide { time: Option<usize> },
}

/// A configured OPC UA source.
pub struct OpcUaSource {
    name: String,
    settings: Settings,
    listed: Vec<Listed>,
    browse: Option<NodeSpec>,
    shape: Shape,
    schema: SchemaRef,
    batch_latency: Duration,
}

impl OpcUaSource {
    /// Reads and checks the options against the declared columns.
    pub fn build(spec: &SourceSpec, o: &Options) -> Result<OpcUaSource, PipelineError> {
        let settings = Settings::from_options(o)?;
        let listed = o.parse_with(&NODES, nodes::parse_list)?.unwrap_or_default();
        let browse = o.parse_with(&BROWSE, NodeSpec::parse)?;
        if listed.is_empty() && browse.is_none() {
            return Err(o.error(
                "no nodes: list them in 'nodes' (e.g. 'temp = ns=2;s=Machine1.Temperature') or give a folder in 'browse'",
            ));
        }
        let schema = spec.schema.clone();
        let shape = match o.value::<String>(&SHAPE)?.as_str() {
            "wide" => {
                let time = match o.text(&TIME_COLUMN) {
                    Some(c) => Some(column_index(&schema, c).ok_or_else(|| {
                        o.error(format!("time_column '{c}' is not a column of this source"))
                    })?),
                    None => spec.event_time,
                };
                if let Some(t) = time
                    && !matches!(schema.field(t).data_type(), DataType::Timestamp(..))
                {
                    return Err(o.error(format!(
                        "time_column '{}' must be a TIMESTAMP",
                        schema.field(t).name()
                    )));
                }
                if let Some(f) = schema
                    .fields()
                    .iter()
                    .find(|f| ValueColumn::new(f.data_type()).is_none())
                {
                    return Err(o.error(format!(
                        "column '{}' is {}, which OPC UA values cannot fill",
                        f.name(),
                        f.data_type()
                    )));
                }
                if browse.is_none() {
                    check_wide_columns(&schema, time, &listed).map_err(|m| o.error(m))?;
                }
                Shape::Wide { time }
            }
            _ => Shape::Long(long_layout(&schema).map_err(|m| o.error(m))?),
        };
        Ok(OpcUaSource {
            name: spec.name.clone(),
            settings,
            listed,
            browse,
            shape,
            schema,
            batch_latency: o.value(&BATCH_LATENCY)?,
        })
    }
}

/// With a fixed node list, every column must be the time, a node or a node's status.
fn check_wide_columns(
    schema: &SchemaRef,
    time: Option<usize>,
    listed: &[Listed],
) -> Result<(), String> {
    let nodes: Vec<Node> = listed
        .iter()
        .map(|l| Node {
            name: l.name.clone(),
            id: l.spec.resolve(&[]).unwrap_or_default(),
        })
        .collect();
    let (layout, unfilled) = wide_layout(schema, time, &nodes);
    if let Layout::Wide { nodes: slots, .. } = &layout
        && let Some((l, _)) = listed.iter().zip(slots).find(|(_, s)| s.0.is_none())
    {
        return Err(format!(
            "node '{}' has no column of that name, or one of a type OPC UA values cannot fill",
            l.name
        ));
    }
    if let Some(c) = unfilled.first() {
        return Err(format!(
            "column '{c}' is not filled: name it in 'nodes', make it the time_column, or call it <node column>_status"
        ));
    }
    Ok(())
}

/// Statuses that say the node itself cannot be read, not that its value is of poor quality.
fn node_error(s: StatusCode) -> bool {
    matches!(
        s,
        StatusCode::BadNodeIdUnknown
            | StatusCode::BadNodeIdInvalid
            | StatusCode::BadAttributeIdInvalid
            | StatusCode::BadNotReadable
            | StatusCode::BadUserAccessDenied
            | StatusCode::BadIndexRangeInvalid
    )
}

/// The instant a value was sampled: its source time, else its server time, else now.
fn instant(v: &DataValue) -> i64 {
    v.source_timestamp
        .as_ref()
        .or(v.server_timestamp.as_ref())
        .map(unix_nanos)
        .unwrap_or_else(now_nanos)
}

/// The nodes and layout of one connection, and the rows in the making.
struct Reading<'a> {
    src: &'a OpcUaSource,
    telemetry: Arc<SourceTelemetry>,
    nodes: Vec<Node>,
    layout: Layout,
    rows: Rows,
    first_unsent: Option<Instant>,
    /// Nodes whose read error was logged.
    reported: HashSet<usize>,
    received: metrics::Counter,
    filtered: metrics::Counter,
}

impl Reading<'_> {
    /// A value passes when its node can be read and the status filter keeps it.
    fn keep(&mut self, node: usize, v: &DataValue) -> bool {
        let status = v.status();
        if node_error(status) {
            let n = &self.nodes[node];
            self.telemetry
                .skip("node", &n.id.to_string(), format!("{}: {status}", n.name));
            if self.reported.insert(node) {
                warn!(source = %self.src.name, node = %n.id, name = %n.name, %status,
                    "opcua node cannot be read; its values are left out");
            }
            return false;
        }
        if !self.src.settings.status_filter.keeps(status) {
            self.filtered.increment(1);
            return false;
        }
        true
    }

    fn long(&mut self, node: usize, v: &DataValue) {
        self.received.increment(1);
        if self.keep(node, v)
            && let Layout::Long(at) = &self.layout
        {
            self.rows
                .push_long(at, &self.nodes[node], v, &self.telemetry);
        }
    }

    fn wide(&mut self, instant: i64, mut values: Vec<Option<DataValue>>) {
        for (i, v) in values.iter_mut().enumerate() {
            if let Some(dv) = v {
                self.received.increment(1);
                if !self.keep(i, dv) {
                    *v = None;
                }
            }
        }
        // an instant whose every value was left out is no row
        if values.iter().all(Option::is_none) {
            return;
        }
        if let Layout::Wide {
            time,
            nodes,
            unfilled,
        } = &self.layout
        {
            self.rows.push_wide(
                *time,
                nodes,
                unfilled,
                &self.nodes,
                instant,
                &values,
                &self.telemetry,
            );
        }
    }

    /// Sends the rows when there are many or the oldest has waited long enough (or `now`).
    async fn flush(&mut self, out: &mut SourceOutput, now: bool) -> bool {
        if self.rows.is_empty() {
            return true;
        }
        let since = *self.first_unsent.get_or_insert_with(Instant::now);
        if !now && self.rows.len() < BATCH_ROWS && since.elapsed() < self.src.batch_latency {
            return true;
        }
        self.first_unsent = None;
        let batch = match self.rows.finish() {
            Ok(b) => b,
            Err(e) => {
                warn!(source = %self.src.name, error = %e, "opcua rows could not be assembled");
                return true;
            }
        };
        if out.is_stopped() {
            out.send_last(batch, Default::default()).await;
            return false;
        }
        out.send(batch).await.is_ok()
    }
}

/// How one connection ended.
enum End {
    Stopped,
    Retry(String),
    /// Refused before connecting, counted as this reason.
    Refused(&'static str, String),
}

/// The session's event loop ended (a reconnection stalled): start over.
fn stalled(r: &Reading<'_>) -> End {
    r.telemetry.set_connection(Connection::Down);
    End::Retry("the session could not reconnect in time".into())
}

impl OpcUaSource {
    /// Resolves the nodes on the server: namespace URIs, and the browse folder.
    async fn resolve(
        &self,
        session: &Session,
        telemetry: &SourceTelemetry,
    ) -> Result<Vec<Node>, String> {
        let needs_ns = self
            .listed
            .iter()
            .any(|l| matches!(l.spec, NodeSpec::Uri { .. }))
            || matches!(self.browse, Some(NodeSpec::Uri { .. }));
        let namespaces = if needs_ns {
            nodes::namespaces(session).await?
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        for l in &self.listed {
            match l.spec.resolve(&namespaces) {
                Some(id) => out.push(Node {
                    name: l.name.clone(),
                    id,
                }),
                None => {
                    // the node cannot be read: counted, its column stays empty
                    telemetry.skip(
                        "node",
                        &l.spec.to_string(),
                        format!("{}: the server has no such namespace", l.name),
                    );
                    out.push(Node {
                        name: l.name.clone(),
                        id: Default::default(),
                    });
                }
            }
        }
        if let Some(b) = &self.browse {
            let root = b
                .resolve(&namespaces)
                .ok_or_else(|| format!("browse folder {b}: the server has no such namespace"))?;
            let found = nodes::browse(session, &root).await?;
            info!(source = %self.name, folder = %root, variables = found.len(), "opcua browse");
            let listed: Vec<_> = out.iter().map(|o| o.id.clone()).collect();
            out.extend(found.into_iter().filter(|f| !listed.contains(&f.id)));
        }
        Ok(out)
    }

    fn layout(&self, nodes: &[Node]) -> Layout {
        match &self.shape {
            Shape::Long(l) => l.clone(),
            Shape::Wide { time } => {
                let (layout, unfilled) = wide_layout(&self.schema, *time, nodes);
                if !unfilled.is_empty() {
                    warn!(source = %self.name, columns = ?unfilled,
                        "opcua: no node fills these columns; they stay null");
                }
                layout
            }
        }
    }

    async fn run_connected(
        &self,
        session: &Arc<Session>,
        events: &mut JoinHandle<()>,
        out: &mut SourceOutput,
    ) -> End {
        let telemetry = out.telemetry().clone();
        let nodes = match self.resolve(session, &telemetry).await {
            Ok(n) => n,
            Err(e) => return End::Retry(e),
        };
        let layout = self.layout(&nodes);
        let mut r = Reading {
            src: self,
            telemetry: telemetry.clone(),
            rows: Rows::new(self.schema.clone()),
            layout,
            first_unsent: None,
            reported: HashSet::new(),
            received: VALUES.counter_with(&[&self.name]),
            filtered: VALUES_FILTERED.counter_with(&[&self.name]),
            nodes,
        };
        let end = match self.settings.read {
            Mode::Subscribe {
                sampling_interval,
                publishing_interval,
                queue_size,
                deadband,
            } => {
                let p = Parameters {
                    sampling_interval,
                    publishing_interval,
                    queue_size,
                    deadband,
                };
                self.subscribed(session, &mut r, p, events, out).await
            }
            Mode::Poll { interval } => self.polled(session, &mut r, interval, events, out).await,
        };
        r.flush(out, true).await;
        end
    }

    async fn subscribed(
        &self,
        session: &Arc<Session>,
        r: &mut Reading<'_>,
        p: Parameters,
        events: &mut JoinHandle<()>,
        out: &mut SourceOutput,
    ) -> End {
        let (tx, mut rx) = mpsc::channel::<Notification>(4096);
        let forward = Forward::new(tx, &self.name);
        match subscribe::create(session, &r.nodes, p, forward, &r.telemetry).await {
            Ok(n) => info!(source = %self.name, items = n, of = r.nodes.len(),
                sampling = ?p.sampling_interval, publishing = ?p.publishing_interval, "opcua subscribed"),
            Err(e) => return End::Retry(e),
        }
        let wide = matches!(r.layout, Layout::Wide { .. });
        let mut instants = Instants::new(r.nodes.len(), p.publishing_interval);
        let mut tick = tokio::time::interval(
            self.batch_latency
                .min(p.publishing_interval)
                .max(Duration::from_millis(10)),
        );
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = out.stopped() => break,
                _ = &mut *events => return stalled(r),
                n = rx.recv() => {
                    let Some(values) = n else { break };
                    let now = Instant::now();
                    for (node, v) in values {
                        if node >= r.nodes.len() {
                            continue;
                        }
                        if wide {
                            if let Some((t, vs)) = instants.add(instant(&v), node, v, now) {
                                r.wide(t, vs);
                            }
                        } else {
                            r.long(node, &v);
                        }
                    }
                }
                _ = tick.tick() => {}
            }
            for (t, vs) in instants.due(Instant::now(), false) {
                r.wide(t, vs);
            }
            if !r.flush(out, false).await {
                return End::Stopped;
            }
        }
        for (t, vs) in instants.due(Instant::now(), true) {
            r.wide(t, vs);
        }
        End::Stopped
    }

    async fn polled(
        &self,
        session: &Arc<Session>,
        r: &mut Reading<'_>,
        interval: Duration,
        events: &mut JoinHandle<()>,
        out: &mut SourceOutput,
    ) -> End {
        let reads: Vec<ReadValueId> = r
            .nodes
            .iter()
            .map(|n| ReadValueId::from(n.id.clone()))
            .collect();
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let polls = POLLS.counter_with(&[&self.name]);
        loop {
            tokio::select! {
                biased;
                _ = out.stopped() => return End::Stopped,
                _ = &mut *events => return stalled(r),
                _ = ticker.tick() => {}
            }
            if r.telemetry.connection() != Connection::Up {
                continue;
            }
            let at = now_nanos();
            let mut values = Vec::with_capacity(reads.len());
            for chunk in reads.chunks(NODES_PER_READ) {
                match session.read(chunk, TimestampsToReturn::Both, 0.0).await {
                    Ok(v) if v.len() == chunk.len() => values.extend(v),
                    Ok(v) => {
                        r.telemetry.skip(
                            "read",
                            &self.settings.client.url,
                            format!("{} values for {} nodes", v.len(), chunk.len()),
                        );
                        break;
                    }
                    Err(e) => {
                        r.telemetry.skip(
                            "read",
                            &self.settings.client.url,
                            session::explain(e.status(), &self.settings.client),
                        );
                        break;
                    }
                }
            }
            polls.increment(1);
            if values.len() != reads.len() {
                continue;
            }
            if matches!(r.layout, Layout::Wide { .. }) {
                r.wide(at, values.into_iter().map(Some).collect());
            } else {
                for (i, v) in values.iter().enumerate() {
                    r.long(i, v);
                }
            }
            if !r.flush(out, false).await {
                return End::Stopped;
            }
        }
    }
}

#[async_trait]
impl Source for OpcUaSource {
    fn is_bounded(&self) -> bool {
        false
    }

    async fn run(self: Box<Self>, mut out: SourceOutput) -> anyhow::Result<()> {
        let telemetry = out.telemetry().clone();
        telemetry.set_connection(Connection::Down);
        let mut client =
            session::client(&self.name, &self.settings.client).map_err(anyhow::Error::msg)?;
        let mut backoff = Reconnect::default();
        let mut failures = 0u64;
        info!(source = %self.name, url = %self.settings.client.url, policy = %self.settings.client.policy,
            mode = ?self.settings.client.mode, read = ?self.settings.read, "opcua source starting");
        loop {
            if out.is_stopped() {
                break;
            }
            let attempt = async {
                let (session, events) = session::open(
                    &mut client,
                    &self.settings.client,
                    Owner::Source(telemetry.clone()),
                    CONNECTION_FAILURES.counter_with(&[&self.name]),
                )
                .await?;
                Ok::<_, session::OpenError>((session, events))
            };
            let opened = tokio::select! {
                biased;
                _ = out.stopped() => break,
                o = attempt => o,
            };
            let end = match opened {
                Ok((session, mut events)) => {
                    let connected = tokio::select! {
                        biased;
                        _ = out.stopped() => Err(End::Stopped),
                        _ = &mut events => Err(End::Retry("the session could not connect in time".into())),
                        c = session.wait_for_connection() => Ok(c),
                    };
                    let end = match connected {
                        Ok(true) => {
                            backoff.reset();
                            failures = 0;
                            self.run_connected(&session, &mut events, &mut out).await
                        }
                        Ok(false) => End::Retry("the session closed while connecting".into()),
                        Err(end) => end,
                    };
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
                    events.abort();
                    telemetry.set_connection(Connection::Down);
                    end
                }
                Err(session::OpenError::Unreachable(e)) => End::Retry(e),
                Err(session::OpenError::Identity(e)) => End::Refused("auth", e),
            };
            let (reason, e) = match end {
                End::Stopped => break,
                End::Retry(e) => ("not_connected", e),
                End::Refused(reason, e) => (reason, e),
            };
            failures += 1;
            let delay = backoff.next_delay();
            telemetry.skip(reason, &self.settings.client.url, &e);
            if failures == 1 || failures.is_power_of_two() {
                warn!(source = %self.name, url = %self.settings.client.url, error = %e,
                    failed_attempts = failures, retry_in = ?delay, "opcua cannot start reading; retrying");
            }
            tokio::select! {
                biased;
                _ = out.stopped() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        Ok(())
    }
}
