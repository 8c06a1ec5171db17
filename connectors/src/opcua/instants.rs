//! Wide rows from a subscription: values are grouped by their sampling instant (source
//! timestamp), and an instant becomes a row once no more of its values are expected — a
//! publishing interval after its first value arrived. Bounded by [`MAX_OPEN`] instants.

use std::collections::BTreeMap;
use std::time::Duration;

use opcua::types::DataValue;
use tokio::time::Instant;

/// Instants held open at most; the oldest is emitted when more arrive.
const MAX_OPEN: usize = 1024;

/// Values of instants not yet emitted.
pub struct Instants {
    nodes: usize,
    linger: Duration,
    open: BTreeMap<i64, (Instant, Vec<Option<DataValue>>)>,
}

impl Instants {
    /// Groups values of `nodes` nodes, each instant held for `linger`.
    pub fn new(nodes: usize, linger: Duration) -> Instants {
        Instants {
            nodes,
            linger,
            open: BTreeMap::new(),
        }
    }

    /// Adds the value of node `node` sampled at `instant` (ns since the epoch); a second
    /// value of the same node and instant replaces the first.
    pub fn add(
        &mut self,
        instant: i64,
        node: usize,
        v: DataValue,
        now: Instant,
    ) -> Option<(i64, Vec<Option<DataValue>>)> {
        let n = self.nodes;
        let slot = self
            .open
            .entry(instant)
            .or_insert_with(|| (now, vec![None; n]));
        if let Some(s) = slot.1.get_mut(node) {
            *s = Some(v);
        }
        if self.open.len() > MAX_OPEN {
            return self.open.pop_first().map(|(t, (_, v))| (t, v));
        }
        None
    }

    /// Instants whose time is up (all of them with `all`), oldest first.
    pub fn due(&mut self, now: Instant, all: bool) -> Vec<(i64, Vec<Option<DataValue>>)> {
        let ready: Vec<i64> = self
            .open
            .iter()
            .filter(|(_, (first, _))| all || now.duration_since(*first) >= self.linger)
            .map(|(t, _)| *t)
            .collect();
        ready
            .into_iter()
            .filter_map(|t| self.open.remove(&t).map(|(_, v)| (t, v)))
            .collect()
    }

    /// True while no instant is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::Variant;

    fn dv(x: f64) -> DataValue {
        DataValue::value_only(Variant::Double(x))
    }

    #[test]
    fn groups_by_instant_and_emits_after_linger() {
        let t0 = Instant::now();
        let mut g = Instants::new(3, Duration::from_millis(100));
        assert!(g.add(2_000, 0, dv(1.0), t0).is_none());
        g.add(1_000, 1, dv(2.0), t0);
        g.add(2_000, 2, dv(3.0), t0 + Duration::from_millis(50));
        g.add(2_000, 0, dv(4.0), t0 + Duration::from_millis(60));
        assert!(g.due(t0 + Duration::from_millis(99), false).is_empty());
        let rows = g.due(t0 + Duration::from_millis(100), false);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, 1_000);
        assert_eq!(rows[0].1[1], Some(dv(2.0)));
        assert_eq!(rows[1].1, vec![Some(dv(4.0)), None, Some(dv(3.0))]);
        assert!(g.is_empty());
    }

    #[test]
    fn open_instants_are_bounded() {
        let t0 = Instant::now();
        let mut g = Instants::new(1, Duration::from_secs(60));
        for i in 0..MAX_OPEN as i64 {
            assert!(g.add(i, 0, dv(0.0), t0).is_none());
        }
        let (oldest, _) = g.add(-5 + MAX_OPEN as i64 * 2, 0, dv(0.0), t0).unwrap();
        assert_eq!(oldest, 0);
        assert_eq!(g.due(t0, true).len(), MAX_OPEN);
    }
}
