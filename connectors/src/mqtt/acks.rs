//! Exactly-once acknowledgements (with checkpoints, QoS 1/2 and a persistent session): a
//! message is acknowledged to the broker only once the two newest complete checkpoints cover
//! the batch its rows went into (the run falls back to the older one when the newest is
//! damaged), so that after a crash the broker delivers exactly the messages whose effect was
//! lost.
//!
//! Messages the broker delivers again — after a reconnect, or after a restart for messages
//! the restored checkpoint covers but whose acknowledgement did not reach the broker — are
//! recognized by their digest (packet id, topic and payload) and their DUP flag: they are
//! acknowledged (when a checkpoint covers them) and not processed twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hasher;

/// An acknowledgement to send: for the packet id `pkid` at `qos`, valid only on the
/// connection it arrived on (`generation`): after a reconnect the broker delivers
/// unacknowledged messages again, and they are acknowledged on the new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Packet identifier.
    pub pkid: u16,
    /// QoS (1: PUBACK, 2: PUBREC).
    pub qos: u8,
    /// The connection it came on.
    pub generation: u64,
}

/// The digest of a message: packet id, topic and payload.
pub fn digest(pkid: u16, topic: &str, payload: &[u8]) -> u64 {
    let mut h = twox_hash::XxHash64::with_seed(0x4d51_5454);
    h.write_u16(pkid);
    h.write(topic.as_bytes());
    h.write_u8(0);
    h.write(payload);
    h.finish()
}

/// What a message arriving with its DUP flag set is.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not seen before: process it.
    New,
    /// Covered by a complete checkpoint: acknowledge it now, do not process it.
    Covered,
    /// Processed, waiting for a checkpoint: it is acknowledged with its batch.
    InFlight,
}

/// The acknowledgement bookkeeping of one source.
#[derive(Debug, Default)]
pub struct Acks {
    /// Messages processed and not yet acknowledged, by digest.
    unacked: HashMap<u64, Ack>,
    /// Digests of the messages in the batch being built.
    current: Vec<u64>,
    /// Batches sent and not yet covered by a checkpoint: their number and digests.
    sent: VecDeque<(u64, Vec<u64>)>,
    /// Digests acknowledged in the last two commits (and those a restored checkpoint
    /// covered): a redelivery of one of them is acknowledged again and dropped.
    recent: VecDeque<Vec<u64>>,
    recent_set: HashSet<u64>,
}

/// Commits whose acknowledged digests are remembered.
const RECENT_COMMITS: usize = 2;

impl Acks {
    /// Bookkeeping that knows `covered`: digests a restored checkpoint covers.
    pub fn new(covered: Vec<u64>) -> Self {
        let mut a = Self::default();
        a.remember(covered);
        a
    }

    fn remember(&mut self, digests: Vec<u64>) {
        if digests.is_empty() {
            // a commit that acknowledged nothing does not push older ones out
            return;
        }
        self.recent_set.extend(&digests);
        self.recent.push_back(digests);
        while self.recent.len() > RECENT_COMMITS + 1 {
            for d in self.recent.pop_front().unwrap_or_default() {
                self.recent_set.remove(&d);
            }
        }
    }

    /// A message arrived again (DUP set) with digest `d` on connection `generation`.
    pub fn redelivered(&mut self, d: u64, generation: u64) -> Seen {
        if let Some(a) = self.unacked.get_mut(&d) {
            // acknowledged later, on the connection it came on now
            a.generation = generation;
            return Seen::InFlight;
        }
        if self.recent_set.contains(&d) {
            return Seen::Covered;
        }
        Seen::New
    }

    /// A message went into the batch being built.
    pub fn taken(&mut self, d: u64, ack: Ack) {
        if self.unacked.insert(d, ack).is_none() {
            self.current.push(d);
        }
    }

    /// Digests of the batch being built (sent with it, kept with checkpoints).
    pub fn current(&self) -> &[u64] {
        &self.current
    }

    /// The batch being built went out as batch `number`.
    pub fn sent(&mut self, number: u64) {
        let digests = std::mem::take(&mut self.current);
        if !digests.is_empty() {
            self.sent.push_back((number, digests));
        }
    }

    /// The batch being built had no rows: its messages have no effect to wait for; their
    /// acknowledgements.
    pub fn without_rows(&mut self) -> Vec<Ack> {
        let digests = std::mem::take(&mut self.current);
        digests
            .iter()
            .filter_map(|d| self.unacked.remove(d))
            .collect()
    }

    /// Checkpoints cover the batches up to `number`: their acknowledgements.
    pub fn committed(&mut self, number: u64) -> Vec<Ack> {
        let mut acks = Vec::new();
        let mut done = Vec::new();
        while self.sent.front().is_some_and(|(n, _)| *n <= number) {
            let (_, digests) = self.sent.pop_front().expect("checked");
            for d in digests {
                if let Some(a) = self.unacked.remove(&d) {
                    acks.push(a);
                }
                done.push(d);
            }
        }
        self.remember(done);
        acks
    }

    /// Messages processed and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(pkid: u16, generation: u64) -> Ack {
        Ack {
            pkid,
            qos: 1,
            generation,
        }
    }

    #[test]
    fn messages_are_acknowledged_when_a_checkpoint_covers_their_batch() {
        let mut a = Acks::new(vec![]);
        let (d1, d2, d3) = (
            digest(1, "t", b"a"),
            digest(2, "t", b"b"),
            digest(3, "t", b"c"),
        );
        a.taken(d1, ack(1, 0));
        a.taken(d2, ack(2, 0));
        assert_eq!(a.current(), &[d1, d2]);
        a.sent(1);
        a.taken(d3, ack(3, 0));
        a.sent(2);
        assert_eq!(a.unacked(), 3);
        assert_eq!(a.committed(1), vec![ack(1, 0), ack(2, 0)]);
        assert_eq!(a.unacked(), 1);
        // after a reconnect the broker sends 3 again, and 1 (whose PUBACK it lost)
        assert_eq!(a.redelivered(d3, 1), Seen::InFlight);
        assert_eq!(a.redelivered(d1, 1), Seen::Covered);
        assert_eq!(a.redelivered(digest(4, "t", b"d"), 1), Seen::New);
        assert_eq!(a.committed(2), vec![ack(3, 1)], "on the new connection");
        // checkpoints that cover nothing new do not make it forget
        assert_eq!(a.committed(2), vec![]);
        assert_eq!(a.committed(2), vec![]);
        assert_eq!(a.redelivered(d1, 1), Seen::Covered);
        // remembered for two more commits that acknowledge something only
        for (n, pkid) in [(3, 5), (4, 6)] {
            let d = digest(pkid, "t", b"e");
            a.taken(d, ack(pkid, 1));
            a.sent(n);
            assert_eq!(a.committed(n), vec![ack(pkid, 1)]);
        }
        assert_eq!(a.redelivered(d1, 2), Seen::New);
        assert_eq!(a.redelivered(d3, 2), Seen::Covered);
    }

    #[test]
    fn a_restored_checkpoint_covers_its_messages_and_rowless_batches_are_acknowledged_at_once() {
        let covered = digest(7, "t", b"x");
        let mut a = Acks::new(vec![covered]);
        assert_eq!(a.redelivered(covered, 0), Seen::Covered);
        assert_ne!(
            digest(7, "t", b"x"),
            digest(8, "t", b"x"),
            "the packet id counts"
        );
        assert_ne!(
            digest(7, "t", b"x"),
            digest(7, "u", b"x"),
            "the topic counts"
        );
        a.taken(digest(9, "t", b"y"), ack(9, 0));
        assert_eq!(a.without_rows(), vec![ack(9, 0)]);
        assert_eq!(a.unacked(), 0);
    }
}
