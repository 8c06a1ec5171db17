//! `mode = 'subscribe'`: one subscription with a monitored item per node. The session's
//! publish loop hands each notification message to [`Forward`], which passes the values on
//! to the source task; the client library re-creates the subscription after a reconnect.

use std::time::Duration;

use opcua::client::{MonitoredItemMap, OnSubscriptionNotificationCore, Session};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeNotification, DataChangeTrigger, DataValue,
    DeadbandType, ExtensionObject, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NotificationMessage, ReadValueId, TimestampsToReturn,
};
use tokio::sync::mpsc;
use weir_engine::observe::telemetry::SourceTelemetry;

use super::nodes::Node;
use super::settings::Deadband;
use super::telemetry::NOTIFICATIONS_DROPPED;

/// Values of one notification: (node index, value).
pub type Notification = Vec<(usize, DataValue)>;

/// Monitored items created per request (servers commonly refuse more).
const ITEMS_PER_CALL: usize = 1000;

/// Passes notifications to the source task without blocking the session.
pub struct Forward {
    tx: mpsc::Sender<Notification>,
    dropped: metrics::Counter,
}

impl Forward {
    /// Forwards to `tx`; notifications that find it full are counted on `dropped`.
    pub fn new(tx: mpsc::Sender<Notification>, source: &str) -> Forward {
        Forward {
            tx,
            dropped: NOTIFICATIONS_DROPPED.counter_with(&[source]),
        }
    }
}

impl OnSubscriptionNotificationCore for Forward {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        let mut values = Vec::new();
        for data in notification.notification_data.unwrap_or_default() {
            if let Some(change) = data.into_inner_as::<DataChangeNotification>() {
                for item in change.monitored_items.unwrap_or_default() {
                    // client handles are node index + 1
                    if let Some(i) = (item.client_handle as usize).checked_sub(1) {
                        values.push((i, item.value));
                    }
                }
            }
        }
        if !values.is_empty() && self.tx.try_send(values).is_err() {
            self.dropped.increment(1);
        }
    }
}

/// What the subscription asks of the server.
#[derive(Debug, Clone, Copy)]
pub struct Parameters {
    /// Sampling interval per item.
    pub sampling_interval: Duration,
    /// Publishing interval of the subscription.
    pub publishing_interval: Duration,
    /// Queue per item.
    pub queue_size: u32,
    /// Deadband filter.
    pub deadband: Option<Deadband>,
}

fn filter(deadband: Option<Deadband>) -> ExtensionObject {
    let (deadband_type, deadband_value) = match deadband {
        None => return ExtensionObject::null(),
        Some(Deadband::Absolute(v)) => (DeadbandType::Absolute, v),
        Some(Deadband::Percent(v)) => (DeadbandType::Percent, v),
    };
    ExtensionObject::from_message(DataChangeFilter {
        trigger: DataChangeTrigger::StatusValue,
        deadband_type: deadband_type as u32,
        deadband_value,
    })
}

/// Creates the subscription and its items; items the server refuses (an unknown node, an
/// unsupported deadband) are counted and logged, the others run. Returns how many run.
pub async fn create(
    session: &Session,
    nodes: &[Node],
    p: Parameters,
    forward: Forward,
    telemetry: &SourceTelemetry,
) -> Result<usize, String> {
    let publishing = p.publishing_interval.max(Duration::from_millis(10));
    // keep-alives every ~10 s, the subscription outlives 3 missed ones
    let keep_alive = (10_000 / publishing.as_millis().max(1) as u32).clamp(3, 1000);
    let id = session
        .create_subscription(publishing, keep_alive * 3, keep_alive, 0, 0, true, forward)
        .await
        .map_err(|e| format!("creating the subscription: {e}"))?;
    let requests: Vec<MonitoredItemCreateRequest> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            MonitoredItemCreateRequest::new(
                ReadValueId {
                    node_id: n.id.clone(),
                    attribute_id: AttributeId::Value as u32,
                    ..Default::default()
                },
                MonitoringMode::Reporting,
                MonitoringParameters {
                    client_handle: i as u32 + 1,
                    sampling_interval: p.sampling_interval.as_secs_f64() * 1000.0,
                    filter: filter(p.deadband),
                    queue_size: p.queue_size,
                    discard_oldest: true,
                },
            )
        })
        .collect();
    let mut running = 0;
    for (chunk, names) in requests
        .chunks(ITEMS_PER_CALL)
        .zip(nodes.chunks(ITEMS_PER_CALL))
    {
        let created = session
            .create_monitored_items(id, TimestampsToReturn::Both, chunk.to_vec())
            .await
            .map_err(|e| format!("creating monitored items: {e}"))?;
        for (c, node) in created.iter().zip(names) {
            if c.result.status_code.is_bad() {
                tracing::warn!(node = %node.id, name = %node.name, status = %c.result.status_code,
                    "opcua: the server refused to monitor this node");
                telemetry.skip(
                    "node",
                    &node.id.to_string(),
                    format!(
                        "{}: the server refused to monitor it ({})",
                        node.name, c.result.status_code
                    ),
                );
            } else {
                running += 1;
            }
        }
    }
    Ok(running)
}
