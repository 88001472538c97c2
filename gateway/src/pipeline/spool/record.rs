//! The Kafka record a spooled event stands for, and its bytes in the
//! spool: what replay needs to send it byte-identical (topic, key,
//! headers, value) plus whose it is and when it was accepted.
//!
//! Encoding, little-endian: `version u8 (1) | accepted_at_ms u64 | tenant
//! str16 | topic str16 | key: 0, or 1 then bytes32 | headers u16, each
//! (name str16, value bytes32) | value bytes32`, where `str16` is a u16
//! length and UTF-8 and `bytes32` a u32 length and bytes. The frame around
//! it carries the checksum.

use super::error::SpoolError;
use super::store::Spool;

const VERSION: u8 = 1;

/// One Kafka record, as spooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub tenant: String,
    /// When the node accepted the event, in Unix milliseconds (the age of
    /// the oldest record is measured from it).
    pub accepted_at_ms: u64,
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub value: Vec<u8>,
}

/// Bytes that are no record of this version (a bug or a foreign file: the
/// frame's checksum held).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spooled record unreadable at byte {at}: {what}")]
pub struct RecordError {
    pub at: usize,
    pub what: &'static str,
}

/// A field too long for its length prefix.
fn too_large(size: usize) -> SpoolError {
    SpoolError::TooLarge {
        size: size as u64,
        max: u64::from(u32::MAX),
    }
}

impl SpoolRecord {
    /// The record's bytes; refused if a name exceeds 64 KiB or a value
    /// 4 GiB, or there are over 65535 headers.
    pub fn encode(&self) -> Result<Vec<u8>, SpoolError> {
        let mut out = Vec::with_capacity(64 + self.value.len());
        out.push(VERSION);
        out.extend_from_slice(&self.accepted_at_ms.to_le_bytes());
        str16(&mut out, &self.tenant)?;
        str16(&mut out, &self.topic)?;
        match &self.key {
            None => out.push(0),
            Some(key) => {
                out.push(1);
                bytes32(&mut out, key)?;
            }
        }
        let count = u16::try_from(self.headers.len()).map_err(|_| too_large(self.headers.len()))?;
        out.extend_from_slice(&count.to_le_bytes());
        for (name, value) in &self.headers {
            str16(&mut out, name)?;
            bytes32(&mut out, value)?;
        }
        bytes32(&mut out, &self.value)?;
        Ok(out)
    }

    /// Reads a record back, checking every length against the input.
    pub fn decode(bytes: &[u8]) -> Result<SpoolRecord, RecordError> {
        let mut c = Cursor { bytes, at: 0 };
        if c.take(1)? != [VERSION] {
            return Err(c.error("unknown version"));
        }
        let accepted_at_ms = u64::from_le_bytes(c.array()?);
        let tenant = c.str16()?;
        let topic = c.str16()?;
        let key = match c.take(1)? {
            [0] => None,
            [1] => Some(c.bytes32()?),
            _ => return Err(c.error("bad key flag")),
        };
        let count = u16::from_le_bytes(c.array()?);
        let headers = (0..count)
            .map(|_| Ok((c.str16()?, c.bytes32()?)))
            .collect::<Result<Vec<_>, RecordError>>()?;
        let value = c.bytes32()?;
        if c.at != bytes.len() {
            return Err(c.error("bytes after the record"));
        }
        Ok(SpoolRecord {
            tenant,
            accepted_at_ms,
            topic,
            key,
            headers,
            value,
        })
    }
}

impl Spool {
    /// Spools a Kafka record under its tenant (see [`Spool::append`]).
    pub fn append_record(&self, record: &SpoolRecord) -> Result<u64, SpoolError> {
        self.append(&record.tenant, &record.encode()?)
    }
}

fn str16(out: &mut Vec<u8>, s: &str) -> Result<(), SpoolError> {
    let len = u16::try_from(s.len()).map_err(|_| too_large(s.len()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn bytes32(out: &mut Vec<u8>, b: &[u8]) -> Result<(), SpoolError> {
    let len = u32::try_from(b.len()).map_err(|_| too_large(b.len()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// A position in bytes being decoded.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, what: &'static str) -> RecordError {
        RecordError { at: self.at, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| self.error("cut short"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn str16(&mut self) -> Result<String, RecordError> {
        let len = u16::from_le_bytes(self.array()?) as usize;
        let at = self.at;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| RecordError {
            at,
            what: "not UTF-8",
        })
    }

    fn bytes32(&mut self) -> Result<Vec<u8>, RecordError> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        Ok(self.take(len)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SpoolRecord {
        SpoolRecord {
            tenant: "demo".into(),
            accepted_at_ms: 1_795_331_515_843,
            topic: "events.PERF_CRASH".into(),
            key: Some(b"demo:d-42".to_vec()),
            headers: vec![
                ("traceparent".into(), b"00-4bf9-01".to_vec()),
                ("weir-tenant".into(), b"demo".to_vec()),
            ],
            value: br#"{"id":"ev-1"}"#.to_vec(),
        }
    }

    #[test]
    fn a_spool_record_reads_back_as_written() {
        let record = sample();
        assert_eq!(SpoolRecord::decode(&record.encode().unwrap()), Ok(record));
        let keyless = SpoolRecord {
            key: None,
            headers: vec![],
            ..sample()
        };
        assert_eq!(SpoolRecord::decode(&keyless.encode().unwrap()), Ok(keyless));
    }

    #[test]
    fn a_spool_record_cut_anywhere_is_an_error_not_a_panic() {
        let bytes = sample().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(SpoolRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SpoolRecord::decode(&longer).is_err());
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] = 0xff;
            let _ = SpoolRecord::decode(&damaged);
        }
    }
}
