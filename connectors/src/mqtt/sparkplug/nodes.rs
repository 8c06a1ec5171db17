//! What a Sparkplug host must remember of each edge node: whether it is online, its
//! birth/death sequence number (bdSeq), the last message sequence number, and the names and
//! datatypes its births gave each alias, for the node and each of its devices.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow::record_batch::RecordBatch;

use super::proto::DataType;

/// Edge nodes remembered at most (a flood of made-up node ids stops here: their messages
/// are skipped with reason `too_many_nodes`).
pub const MAX_NODES: usize = 10_000;
/// Metric names remembered at most over all nodes and devices (births beyond it are
/// skipped with reason `too_many_metrics`).
pub const MAX_METRICS: usize = 1_000_000;

/// Whether a node's metrics are current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Born and in sequence.
    Online,
    /// Dead (NDEATH): its metrics are stale.
    Offline,
    /// Never born while Weir listened, or out of sequence since: a rebirth is due.
    Unknown,
}

impl Life {
    /// The `state` label of `weir_sparkplug_nodes`.
    pub fn label(self) -> &'static str {
        match self {
            Life::Online => "online",
            Life::Offline => "offline",
            Life::Unknown => "unknown",
        }
    }

    /// Every state, in label order.
    pub const ALL: [Life; 3] = [Life::Online, Life::Offline, Life::Unknown];
}

/// A metric a birth declared.
#[derive(Debug, Clone)]
pub struct Known {
    /// Its name.
    pub name: String,
    /// Its datatype (`None`: a number the specification does not define, e.g. an array).
    pub datatype: Option<DataType>,
    /// The datatype number as sent.
    pub datatype_number: u32,
}

/// The metrics of a node or a device, by alias and in birth order.
#[derive(Debug, Default)]
pub struct Catalog {
    /// In birth order.
    pub metrics: Vec<Known>,
    by_alias: HashMap<u64, usize>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    /// Remembers a metric of a birth.
    pub fn declare(&mut self, known: Known, alias: Option<u64>) {
        let i = match self.by_name.get(&known.name) {
            Some(&i) => {
                self.metrics[i] = known;
                i
            }
            None => {
                self.by_name.insert(known.name.clone(), self.metrics.len());
                self.metrics.push(known);
                self.metrics.len() - 1
            }
        };
        if let Some(a) = alias {
            self.by_alias.insert(a, i);
        }
    }

    /// The metric a birth gave `alias`.
    pub fn by_alias(&self, alias: u64) -> Option<&Known> {
        self.by_alias.get(&alias).map(|&i| &self.metrics[i])
    }

    /// The metric a birth declared as `name`.
    pub fn by_name(&self, name: &str) -> Option<&Known> {
        self.by_name.get(name).map(|&i| &self.metrics[i])
    }

    /// Metrics remembered.
    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    /// None remembered.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }
}

/// A device of an edge node.
#[derive(Debug, Default)]
pub struct Device {
    /// Born and not dead since.
    pub online: bool,
    /// Its metrics.
    pub catalog: Catalog,
}

/// An edge node as a host sees it.
#[derive(Debug)]
pub struct Node {
    /// Its state.
    pub life: Life,
    /// The bdSeq of its last NBIRTH.
    pub bd_seq: Option<u64>,
    /// The sequence number of its last message.
    pub seq: Option<u64>,
    /// Its own metrics.
    pub catalog: Catalog,
    /// Its devices.
    pub devices: HashMap<String, Device>,
    /// NBIRTHs seen.
    pub births: u64,
    /// When the last NBIRTH arrived (ns since the epoch).
    pub last_birth_ns: Option<i64>,
    /// Sequence gaps seen.
    pub seq_errors: u64,
    /// When Weir last asked it for a rebirth (ns since the epoch).
    pub rebirth_asked_ns: Option<i64>,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            life: Life::Unknown,
            bd_seq: None,
            seq: None,
            catalog: Catalog::default(),
            devices: HashMap::new(),
            births: 0,
            last_birth_ns: None,
            seq_errors: 0,
            rebirth_asked_ns: None,
        }
    }
}

impl Node {
    /// Metric names it holds, its devices' included.
    pub fn metric_count(&self) -> usize {
        self.catalog.len()
            + self
                .devices
                .values()
                .map(|d| d.catalog.len())
                .sum::<usize>()
    }

    /// Whether `seq` follows the last message's (0–255, wrapping); the first message seen
    /// and messages without a sequence number follow whatever came before.
    pub fn in_sequence(&self, seq: Option<u64>) -> bool {
        match (self.seq, seq) {
            (Some(last), Some(s)) => s == (last + 1) % 256,
            _ => true,
        }
    }
}

/// The edge nodes seen, by group and edge node (looked up without allocating).
#[derive(Debug, Default)]
pub struct Nodes {
    groups: HashMap<String, HashMap<String, Node>>,
    count: usize,
    metrics: usize,
}

impl Nodes {
    /// The node, remembered from now on, and whether it is new; `None` when [`MAX_NODES`]
    /// are remembered already.
    pub fn get_or_add(&mut self, group: &str, edge_node: &str) -> Option<(&mut Node, bool)> {
        let new = self.get(group, edge_node).is_none();
        if new {
            if self.count >= MAX_NODES {
                return None;
            }
            self.count += 1;
            self.groups
                .entry(group.to_string())
                .or_default()
                .insert(edge_node.to_string(), Node::default());
        }
        let node = self.groups.get_mut(group)?.get_mut(edge_node)?;
        Some((node, new))
    }

    /// The node, if seen.
    pub fn get(&self, group: &str, edge_node: &str) -> Option<&Node> {
        self.groups.get(group)?.get(edge_node)
    }

    fn all(&self) -> impl Iterator<Item = (&str, &str, &Node)> {
        self.groups
            .iter()
            .flat_map(|(g, nodes)| nodes.iter().map(move |(e, n)| (g.as_str(), e.as_str(), n)))
    }

    /// Whether `more` metric names fit under [`MAX_METRICS`] after `freed` are forgotten.
    pub fn has_room(&self, freed: usize, more: usize) -> bool {
        self.metrics - freed.min(self.metrics) + more <= MAX_METRICS
    }

    /// Recounts the metric names remembered (after a birth).
    pub fn recount(&mut self) {
        self.metrics = self.all().map(|(_, _, n)| n.metric_count()).sum();
    }

    /// Nodes per state, in [`Life::ALL`] order.
    pub fn by_life(&self) -> [usize; 3] {
        let mut n = [0; 3];
        for (_, _, node) in self.all() {
            n[Life::ALL.iter().position(|l| *l == node.life).unwrap_or(2)] += 1;
        }
        n
    }

    /// One row per node, in group and node order: `group, edge_node, state, births,
    /// last_birth, bd_seq, seq, seq_errors, devices, devices_online, metrics,
    /// rebirth_asked` (the source's `system.sparkplug_nodes`).
    pub fn table(&self) -> RecordBatch {
        let mut nodes: Vec<((&str, &str), &Node)> =
            self.all().map(|(g, e, n)| ((g, e), n)).collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        let text = |f: &dyn Fn((&str, &str), &Node) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(
                nodes.iter().map(|(k, n)| f(*k, n)),
            ))
        };
        let count = |f: &dyn Fn(&Node) -> Option<u64>| -> ArrayRef {
            Arc::new(UInt64Array::from_iter(nodes.iter().map(|(_, n)| f(n))))
        };
        let time = |f: &dyn Fn(&Node) -> Option<i64>| -> ArrayRef {
            Arc::new(TimestampNanosecondArray::from_iter(
                nodes.iter().map(|(_, n)| f(n)),
            ))
        };
        RecordBatch::try_from_iter([
            ("group", text(&|k, _| k.0.to_string())),
            ("edge_node", text(&|k, _| k.1.to_string())),
            ("state", text(&|_, n| n.life.label().to_string())),
            ("births", count(&|n| Some(n.births))),
            ("last_birth", time(&|n| n.last_birth_ns)),
            ("bd_seq", count(&|n| n.bd_seq)),
            ("seq", count(&|n| n.seq)),
            ("seq_errors", count(&|n| Some(n.seq_errors))),
            ("devices", count(&|n| Some(n.devices.len() as u64))),
            (
                "devices_online",
                count(&|n| Some(n.devices.values().filter(|d| d.online).count() as u64)),
            ),
            ("metrics", count(&|n| Some(n.metric_count() as u64))),
            ("rebirth_asked", time(&|n| n.rebirth_asked_ns)),
        ])
        .expect("columns of one length")
    }
}
