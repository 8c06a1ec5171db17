//! Request planning: the points of one table are coalesced into as few reads as the
//! protocol allows (125 registers or 2000 bits per request), bridging gaps of at most
//! `max_gap` unmapped items.

use super::register_map::{Point, Table};

/// One read request and the points it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Table read.
    pub table: Table,
    /// First address.
    pub start: u16,
    /// Items read.
    pub count: u16,
    /// Indices (into the map) of the points inside the read.
    pub points: Vec<usize>,
}

impl Read {
    fn end(&self) -> u32 {
        self.start as u32 + self.count as u32
    }
}

/// Plans the reads for `points`: per table in address order, a point joins the current
/// read when the gap before it is at most `max_gap` and the read stays within the
/// protocol's limit. Without `max_gap` every point is read on its own.
pub fn plan(points: &[Point], max_gap: Option<u16>) -> Vec<Read> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].table, points[i].address, points[i].end()));
    let mut reads: Vec<Read> = Vec::new();
    for i in order {
        let p = &points[i];
        if let Some((r, max_gap)) = reads.last_mut().filter(|r| r.table == p.table).zip(max_gap) {
            let gap_ok = p.address as u32 <= r.end() + max_gap as u32;
            let new_end = r.end().max(p.end());
            if gap_ok && new_end - r.start as u32 <= p.table.max_per_request() as u32 {
                r.count = (new_end - r.start as u32) as u16;
                r.points.push(i);
                continue;
            }
        }
        reads.push(Read {
            table: p.table,
            start: p.address,
            count: p.len(),
            points: vec![i],
        });
    }
    reads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::register_map::parse_inline;

    fn ranges(map: &str, gap: u16) -> Vec<(Table, u16, u16)> {
        plan(&parse_inline(map).unwrap(), Some(gap))
            .into_iter()
            .map(|r| (r.table, r.start, r.count))
            .collect()
    }

    #[test]
    fn coalesces_within_gap_and_limit() {
        let map = "a = holding 0 float32; b = holding 4; c = holding 30 int64; d = input 0; e = coil 3; f = coil 1999; g = coil 2003";
        assert_eq!(
            ranges(map, 10),
            vec![
                (Table::Coil, 3, 1),
                (Table::Coil, 1999, 5),
                (Table::Holding, 0, 5),
                (Table::Holding, 30, 4),
                (Table::Input, 0, 1),
            ]
        );
        assert_eq!(ranges(map, 30)[2], (Table::Holding, 0, 34));
        assert_eq!(ranges(map, 3000)[0], (Table::Coil, 3, 1997));
        // 125 registers at most: 0..=124 fits, a register at 125 does not
        assert_eq!(
            ranges("a = holding 0; b = holding 124; c = holding 125", 200),
            vec![(Table::Holding, 0, 125), (Table::Holding, 125, 1)]
        );
    }

    #[test]
    fn overlapping_points_share_a_read() {
        let map = "a = holding 10 uint32; b = holding 10 bit=0; c = holding 11 bit=15";
        let reads = plan(&parse_inline(map).unwrap(), Some(0));
        assert_eq!(reads.len(), 1);
        assert_eq!((reads[0].start, reads[0].count), (10, 2));
        assert_eq!(reads[0].points.len(), 3);
        assert_eq!(plan(&parse_inline(map).unwrap(), None).len(), 3);
    }
}
