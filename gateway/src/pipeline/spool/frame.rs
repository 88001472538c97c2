//! One record on disk: a frame that says where it starts (a magic number),
//! how long it is and whether its bytes are the ones written (CRC32C), so a
//! reader can tell a whole record from a torn or damaged one and find the
//! next good record after damage.
//!
//! Layout, little-endian:
//!
//! ```text
//! magic u32 | len u32 | crc u32 | seq u64 | tenant_len u16 | tenant | payload
//!                                 \------------------ body (len bytes) -----/
//! ```
//!
//! The checksum covers `len` and the body, so a damaged length is caught
//! too, not only damaged contents.

use memchr::memmem;

/// The bytes every frame starts with ("WSPL"): damage is skipped by
/// searching for the next one that starts a valid frame.
const MAGIC: [u8; 4] = *b"WSPL";

/// Magic, length and checksum.
pub(super) const HEADER: usize = 12;

/// The body's fixed part: sequence number and tenant length.
const BODY_FIXED: usize = 10;

/// The longest body a frame may claim: a length beyond it is damage, never
/// an allocation.
pub(super) const MAX_BODY: usize = 1 << 30;

/// A whole, checked record as it lies in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame<'a> {
    pub seq: u64,
    pub tenant: &'a str,
    pub payload: &'a [u8],
    /// The frame's size on disk, header included.
    pub len: usize,
}

/// What the bytes at one position are.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded<'a> {
    /// A whole record whose checksum holds.
    Frame(Frame<'a>),
    /// The buffer ends before the frame does (a torn tail, or no data yet).
    Incomplete,
    /// Not a valid frame, and why.
    Bad(&'static str),
}

/// The size on disk of a record with this tenant and payload.
pub fn frame_len(tenant: &str, payload: &[u8]) -> usize {
    HEADER + BODY_FIXED + tenant.len() + payload.len()
}

/// Appends the frame of one record to `out`. The caller has checked that
/// the tenant fits a u16 and the frame `MAX_BODY`.
pub(super) fn encode(out: &mut Vec<u8>, seq: u64, tenant: &str, payload: &[u8]) {
    let body_len = BODY_FIXED + tenant.len() + payload.len();
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
    out.extend_from_slice(tenant.as_bytes());
    out.extend_from_slice(payload);
    let crc = checksum(&out[start + 4..start + 8], &out[start + HEADER..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(len: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len), body)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Reads the frame at the start of `buf`, checking everything: nothing in
/// `buf` is trusted.
pub(super) fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER {
        return Decoded::Incomplete;
    }
    if buf[..4] != MAGIC {
        return Decoded::Bad("no record starts here (bad magic)");
    }
    let body_len = u32_at(buf, 4) as usize;
    if !(BODY_FIXED..=MAX_BODY).contains(&body_len) {
        return Decoded::Bad("impossible record length");
    }
    let Some(body) = buf.get(HEADER..HEADER + body_len) else {
        return Decoded::Incomplete;
    };
    if checksum(&buf[4..8], body) != u32_at(buf, 8) {
        return Decoded::Bad("checksum mismatch");
    }
    let mut seq = [0; 8];
    seq.copy_from_slice(&body[..8]);
    let tenant_len = u16::from_le_bytes([body[8], body[9]]) as usize;
    let Some(tenant) = body.get(BODY_FIXED..BODY_FIXED + tenant_len) else {
        return Decoded::Bad("tenant longer than the record");
    };
    let Ok(tenant) = std::str::from_utf8(tenant) else {
        return Decoded::Bad("tenant is not UTF-8");
    };
    Decoded::Frame(Frame {
        seq: u64::from_le_bytes(seq),
        tenant,
        payload: &body[BODY_FIXED + tenant_len..],
        len: HEADER + body_len,
    })
}

/// One step of a [`Scanner`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Item<'a> {
    /// A good record at this offset.
    Record { at: usize, frame: Frame<'a> },
    /// `len` bytes at `at` that are no record, with a good record after.
    Damage {
        at: usize,
        len: usize,
        why: &'static str,
    },
    /// From `at` to the end of the buffer there is no good record: a torn
    /// tail if this is the newest segment, damage otherwise.
    Tail { at: usize, why: &'static str },
}

/// Walks a segment's bytes record by record, resynchronising after damage
/// on the next magic that starts a valid frame. Each step moves forward,
/// so it always ends.
pub(super) struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Scanner { buf, pos: 0 }
    }

    /// The next good frame at or after `from`, if any.
    fn resync(&self, from: usize) -> Option<usize> {
        let rest = self.buf.get(from..)?;
        memmem::find_iter(rest, &MAGIC)
            .map(|offset| from + offset)
            .find(|&at| matches!(decode(&self.buf[at..]), Decoded::Frame(_)))
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let at = self.pos;
        if at >= self.buf.len() {
            return None;
        }
        let why = match decode(&self.buf[at..]) {
            Decoded::Frame(frame) => {
                self.pos += frame.len;
                return Some(Item::Record { at, frame });
            }
            Decoded::Incomplete => "record cut short",
            Decoded::Bad(why) => why,
        };
        match self.resync(at + 1) {
            Some(next) => {
                self.pos = next;
                Some(Item::Damage {
                    at,
                    len: next - at,
                    why,
                })
            }
            None => {
                self.pos = self.buf.len();
                Some(Item::Tail { at, why })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(records: &[(u64, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, tenant, payload) in records {
            encode(&mut out, *seq, tenant, payload);
        }
        out
    }

    #[test]
    fn a_frame_reads_back_as_written() {
        let buf = frames(&[(7, "acme", b"hello")]);
        assert_eq!(buf.len(), frame_len("acme", b"hello"));
        let Decoded::Frame(frame) = decode(&buf) else {
            panic!("not a frame")
        };
        assert_eq!(
            (frame.seq, frame.tenant, frame.payload),
            (7, "acme", &b"hello"[..])
        );
        assert_eq!(frame.len, buf.len());
    }

    #[test]
    fn every_cut_of_a_frame_is_incomplete() {
        let buf = frames(&[(1, "t", b"payload")]);
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let buf = frames(&[(1, "tenant", b"some payload")]);
        for at in 0..buf.len() {
            let mut damaged = buf.clone();
            damaged[at] ^= 0x40;
            assert!(
                !matches!(decode(&damaged), Decoded::Frame(_)),
                "flip at {at} went unnoticed"
            );
        }
    }

    #[test]
    fn the_scanner_skips_damage_and_reports_a_tail() {
        let records: [(u64, &str, &[u8]); 4] = [
            (1, "a", b"one"),
            (2, "a", b"two"),
            (3, "a", b"three"),
            (4, "a", b"four"),
        ];
        let mut buf = frames(&records);
        let second = frame_len("a", b"one");
        buf[second + 20] ^= 1;
        buf.truncate(buf.len() - 2);
        let items: Vec<Item> = Scanner::new(&buf).collect();
        assert_eq!(items.len(), 4, "{items:?}");
        assert!(matches!(items[0], Item::Record { at: 0, frame } if frame.seq == 1));
        assert!(matches!(items[1], Item::Damage { at, .. } if at == second));
        assert!(matches!(items[2], Item::Record { frame, .. } if frame.seq == 3));
        assert!(matches!(items[3], Item::Tail { .. }));
    }

    #[test]
    fn garbage_ends_without_a_record() {
        let buf = vec![b'W'; 1000];
        let items: Vec<Item> = Scanner::new(&buf).collect();
        assert!(matches!(items[..], [Item::Tail { at: 0, .. }]));
    }
}
