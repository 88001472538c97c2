//! The spool's memory of its records: for every sequence number from the
//! oldest unacknowledged one on, whether the record is still pending, its
//! tenant and size, so acknowledgement and byte accounting need no disk
//! read. About 12 bytes per record, never the records themselves.

use std::collections::{HashMap, VecDeque};

/// The most sequence numbers one gap may skip while records are pending:
/// a larger jump (a damaged but checksum-valid frame) is refused instead of
/// filling memory.
pub(super) const MAX_GAP: u64 = 1 << 24;

/// One sequence number's state.
#[derive(Debug, Clone, Copy)]
struct Slot {
    tenant: u32,
    bytes: u32,
    pending: bool,
}

/// Pending records by sequence number, plus bytes per tenant.
///
/// Sequence numbers below `base` are all done (acknowledged, lost or never
/// written); `base + slots.len()` is the next number to hand out.
#[derive(Debug, Default)]
pub(super) struct Index {
    base: u64,
    slots: VecDeque<Slot>,
    tenant_ids: HashMap<String, u32>,
    /// Name, pending bytes and pending records of each tenant, by id.
    tenants: Vec<(String, u64, u64)>,
    pending_bytes: u64,
    pending_records: u64,
}

impl Index {
    /// An empty index whose next sequence number is `next`.
    pub(super) fn starting_at(next: u64) -> Self {
        Index {
            base: next,
            ..Index::default()
        }
    }

    /// The next sequence number to hand out.
    pub(super) fn next_seq(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// Every number below this is done.
    pub(super) fn low_watermark(&self) -> u64 {
        self.base
    }

    pub(super) fn pending_records(&self) -> u64 {
        self.pending_records
    }

    pub(super) fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// The oldest pending sequence number.
    pub(super) fn oldest(&self) -> Option<u64> {
        self.slots
            .iter()
            .position(|s| s.pending)
            .map(|i| self.base + i as u64)
    }

    pub(super) fn tenant_bytes(&self, tenant: &str) -> u64 {
        self.tenant_ids
            .get(tenant)
            .map_or(0, |&id| self.tenants[id as usize].1)
    }

    /// Every tenant with pending records: name, bytes, records.
    pub(super) fn tenants(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.tenants
            .iter()
            .filter(|(_, _, records)| *records > 0)
            .map(|(t, b, r)| (t.as_str(), *b, *r))
    }

    /// Moves the next sequence number up to `next` (numbers skipped are
    /// done). Refuses a jump over `MAX_GAP` while records are pending.
    pub(super) fn skip_to(&mut self, next: u64) -> Result<(), u64> {
        let current = self.next_seq();
        if next <= current {
            return Ok(());
        }
        if self.pending_records == 0 {
            self.slots.clear();
            self.base = next;
            return Ok(());
        }
        let gap = next - current;
        if gap > MAX_GAP {
            return Err(gap);
        }
        let done = Slot {
            tenant: 0,
            bytes: 0,
            pending: false,
        };
        self.slots.extend(std::iter::repeat_n(done, gap as usize));
        Ok(())
    }

    /// Records `seq` (at or after the next number) as pending.
    pub(super) fn push(&mut self, seq: u64, tenant: &str, bytes: u32) -> Result<(), u64> {
        self.skip_to(seq)?;
        let id = match self.tenant_ids.get(tenant) {
            Some(&id) => id,
            None => {
                let id = self.tenants.len() as u32;
                self.tenants.push((tenant.to_owned(), 0, 0));
                self.tenant_ids.insert(tenant.to_owned(), id);
                id
            }
        };
        self.tenants[id as usize].1 += u64::from(bytes);
        self.tenants[id as usize].2 += 1;
        self.pending_bytes += u64::from(bytes);
        self.pending_records += 1;
        self.slots.push_back(Slot {
            tenant: id,
            bytes,
            pending: true,
        });
        Ok(())
    }

    pub(super) fn is_pending(&self, seq: u64) -> bool {
        self.slot(seq).is_some_and(|s| s.pending)
    }

    fn slot(&self, seq: u64) -> Option<&Slot> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get(i)
    }

    /// Marks `seq` done; its size if it was pending.
    pub(super) fn finish(&mut self, seq: u64) -> Option<u32> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let slot = self.slots.get_mut(i)?;
        if !slot.pending {
            return None;
        }
        slot.pending = false;
        let bytes = slot.bytes;
        self.tenants[slot.tenant as usize].1 -= u64::from(bytes);
        self.tenants[slot.tenant as usize].2 -= 1;
        self.pending_bytes -= u64::from(bytes);
        self.pending_records -= 1;
        while self.slots.front().is_some_and(|s| !s.pending) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(bytes)
    }

    /// The done numbers at or above the watermark, as `(start, count)` runs.
    pub(super) fn done_runs(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.pending {
                continue;
            }
            let seq = self.base + i as u64;
            match runs.last_mut() {
                Some((start, count)) if *start + *count == seq => *count += 1,
                _ => runs.push((seq, 1)),
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgement_in_any_order_moves_the_watermark() {
        let mut index = Index::starting_at(10);
        for seq in 10..15 {
            index
                .push(seq, if seq % 2 == 0 { "a" } else { "b" }, 100)
                .unwrap();
        }
        assert_eq!(index.finish(12), Some(100));
        assert_eq!(index.finish(12), None, "twice");
        assert_eq!(index.low_watermark(), 10);
        assert_eq!(index.done_runs(), vec![(12, 1)]);
        assert_eq!(index.finish(10), Some(100));
        assert_eq!(index.finish(11), Some(100));
        assert_eq!(index.low_watermark(), 13);
        assert_eq!(index.tenant_bytes("a"), 100);
        assert_eq!(index.tenant_bytes("b"), 100);
        assert_eq!(index.pending_records(), 2);
        assert_eq!(index.next_seq(), 15);
    }

    #[test]
    fn a_huge_jump_with_pending_records_is_refused() {
        let mut index = Index::starting_at(0);
        index.push(0, "a", 1).unwrap();
        assert!(index.push(u64::MAX / 2, "a", 1).is_err());
        index.finish(0);
        index.push(u64::MAX / 2, "a", 1).unwrap();
        assert_eq!(index.next_seq(), u64::MAX / 2 + 1);
    }
}
