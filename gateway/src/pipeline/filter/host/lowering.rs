//! The batch as a guest receives it: put together once on the host and
//! lowered into the guest's memory with a few copies, by hand-written
//! implementations of wasmtime's `ComponentType`/`Lower` (the `unsafe` of
//! the filter host lives here, next to the layout it writes).

use std::net::IpAddr;

use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower};
use wasmtime::ValRaw;

use super::weir::filter::types::{Event as WitEvent, Geo as WitGeo, Span};
use crate::model::Geo;

/// A batch put together for filter calls: the events' ids and bodies are
/// lowered into the guest as one `list<u8>` straight from the batch
/// ([`Pieces`]) and their locations into one table of distinct places, so
/// handing it to a guest costs a few copies rather than a few per event
/// (wasmtime lowers every string with a call into the guest's allocator).
pub struct BatchInput<'a> {
    tenant: &'a str,
    category: &'a str,
    received_at: i64,
    places: Vec<&'a Geo>,
    geos: Vec<WitGeo<'a>>,
    bytes: Pieces<'a>,
    events: Vec<FlatEvent>,
}

impl<'a> BatchInput<'a> {
    /// An empty batch with room for `events` events.
    pub fn with_capacity(
        tenant: &'a str,
        category: &'a str,
        received_at: i64,
        events: usize,
    ) -> Self {
        BatchInput {
            tenant,
            category,
            received_at,
            places: Vec::new(),
            geos: Vec::new(),
            bytes: Pieces {
                pieces: Vec::with_capacity(2 * events),
                len: 0,
            },
            events: Vec::with_capacity(events),
        }
    }

    /// Adds one event; `backend_id` is its UUID's 128 bits.
    pub fn push(
        &mut self,
        backend_id: u128,
        id: &'a str,
        client_ip: Option<IpAddr>,
        geo: Option<&'a Geo>,
        body: &'a [u8],
    ) {
        let id = self.bytes.append(id.as_bytes());
        let body = self.bytes.append(body);
        let geo = geo.map(
            // Events from one address share one `Geo`: compare pointers first.
            |geo| match self
                .places
                .iter()
                .position(|known| std::ptr::eq(*known, geo) || *known == geo)
            {
                Some(i) => i as u32,
                None => {
                    self.places.push(geo);
                    self.geos.push(WitGeo {
                        country: geo.country.as_deref(),
                        region: geo.region.as_deref(),
                        city: geo.city.as_deref(),
                    });
                    (self.geos.len() - 1) as u32
                }
            },
        );
        self.events
            .push(FlatEvent::new(backend_id, id, client_ip, geo, body));
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// A seed for the call's randomness from what the batch is (not from
    /// its random backend ids): the same input gives the same seed.
    pub(super) fn seed(&self) -> u64 {
        // FNV-1a: a few bytes per event, no allocation.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(self.tenant.as_bytes());
        eat(self.category.as_bytes());
        eat(&self.received_at.to_le_bytes());
        for event in &self.events {
            eat(&event.0[16..]);
        }
        hash
    }

    pub(super) fn received_at(&self) -> i64 {
        self.received_at
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub(super) fn as_wit(&self) -> FlatBatch<'_> {
        FlatBatch {
            tenant: self.tenant,
            category: self.category,
            received_at: self.received_at,
            geos: &self.geos,
            bytes: &self.bytes,
            events: &self.events,
        }
    }
}

/// The batch's `bytes`: the events' ids and bodies, end to end, as slices
/// of the batch itself. Lowered as a `list<u8>` with one allocation in the
/// guest and a copy per slice, so the bytes are copied once, into the
/// guest, rather than into a host buffer first.
pub(super) struct Pieces<'a> {
    pieces: Vec<&'a [u8]>,
    len: usize,
}

impl<'a> Pieces<'a> {
    /// Appends `bytes`; returns where they are in the list.
    fn append(&mut self, bytes: &'a [u8]) -> Span {
        // Bodies are capped far below 4 GiB; saturate rather than wrap.
        let span = Span {
            offset: u32::try_from(self.len).unwrap_or(u32::MAX),
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        };
        if !bytes.is_empty() {
            self.pieces.push(bytes);
            self.len += bytes.len();
        }
        span
    }

    /// Copies the pieces into one new allocation in the guest; returns its
    /// address.
    fn store<T>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<usize> {
        let ptr = cx.realloc(0, 0, 1, self.len)?;
        let Some(mut dst) = cx.as_slice_mut().get_mut(ptr..ptr + self.len) else {
            wasmtime::bail!("batch bytes out of bounds");
        };
        for piece in &self.pieces {
            let (here, rest) = dst.split_at_mut(piece.len());
            here.copy_from_slice(piece);
            dst = rest;
        }
        Ok(ptr)
    }

    #[cfg(test)]
    fn to_vec(&self) -> Vec<u8> {
        self.pieces.concat()
    }
}

// SAFETY: the ABI and type check of `list<u8>`, which `Lower` writes.
unsafe impl ComponentType for Pieces<'_> {
    type Lower = <[u8] as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <[u8] as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[u8] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: as wasmtime lowers a `[u8]`: a (pointer, length) pair, flat as two
// i64 values, in memory as two u32 at an offset wasmtime checked.
unsafe impl Lower for Pieces<'_> {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        dst: &mut std::mem::MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        let ptr = self.store(cx)?;
        dst.write([ValRaw::i64(ptr as i64), ValRaw::i64(self.len as i64)]);
        Ok(())
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let ptr = self.store(cx)?;
        *cx.get::<4>(offset) = u32::try_from(ptr)?.to_le_bytes();
        *cx.get::<4>(offset + 4) = u32::try_from(self.len)?.to_le_bytes();
        Ok(())
    }
}

/// `weir:filter/types.batch` as the host lowers it: as the generated
/// `Batch`, but with the events already in their memory layout and the
/// bytes still where the batch holds them.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct FlatBatch<'a> {
    tenant: &'a str,
    category: &'a str,
    #[component(name = "received-at")]
    received_at: i64,
    geos: &'a [WitGeo<'a>],
    bytes: &'a Pieces<'a>,
    events: &'a [FlatEvent],
}

/// One `weir:filter/types.event` in the canonical ABI's memory layout,
/// written once when the batch is put together, so that the list is lowered
/// into the guest with a copy per event rather than a bounds-checked store
/// per field (which was most of the cost of handing a batch over). The
/// layout (64 bytes, align 8):
///
/// | offset | field |
/// |---|---|
/// | 0 | backend-id: u64 high, u64 low |
/// | 16 | id: span (offset u32, len u32) |
/// | 24 | client-ip: option tag u8; 26: ip-address tag u8; 28: 4 × u8 or 8 × u16 |
/// | 44 | geo: option tag u8; 48: u32 |
/// | 52 | body: span |
///
/// Its type check is the generated `Event`'s. It implements wasmtime's
/// `ComponentType`/`Lower` by hand, which are documented as internal: on a
/// wasmtime upgrade, `flat_events_have_the_event_abi` and the end-to-end
/// echo test (every field a guest sees) say whether the layout still holds.
#[derive(Clone, Copy)]
pub(super) struct FlatEvent([u8; FlatEvent::SIZE]);

impl FlatEvent {
    const SIZE: usize = 64;

    fn new(
        backend_id: u128,
        id: Span,
        client_ip: Option<IpAddr>,
        geo: Option<u32>,
        body: Span,
    ) -> FlatEvent {
        let mut b = [0u8; FlatEvent::SIZE];
        b[0..8].copy_from_slice(&((backend_id >> 64) as u64).to_le_bytes());
        b[8..16].copy_from_slice(&(backend_id as u64).to_le_bytes());
        b[16..20].copy_from_slice(&id.offset.to_le_bytes());
        b[20..24].copy_from_slice(&id.len.to_le_bytes());
        match client_ip {
            None => {}
            Some(IpAddr::V4(v4)) => {
                b[24] = 1;
                b[28..32].copy_from_slice(&v4.octets());
            }
            Some(IpAddr::V6(v6)) => {
                b[24] = 1;
                b[26] = 1;
                for (i, segment) in v6.segments().iter().enumerate() {
                    b[28 + 2 * i..30 + 2 * i].copy_from_slice(&segment.to_le_bytes());
                }
            }
        }
        if let Some(geo) = geo {
            b[44] = 1;
            b[48..52].copy_from_slice(&geo.to_le_bytes());
        }
        b[52..56].copy_from_slice(&body.offset.to_le_bytes());
        b[56..60].copy_from_slice(&body.len.to_le_bytes());
        FlatEvent(b)
    }
}

// SAFETY: same ABI and type check as the generated `Event`, whose memory
// layout `FlatEvent::new` writes (checked by `flat_events_have_the_event_abi`).
unsafe impl ComponentType for FlatEvent {
    type Lower = <WitEvent as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <WitEvent as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <WitEvent as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: writes exactly `SIZE32` bytes at offsets wasmtime checked.
unsafe impl Lower for FlatEvent {
    fn linear_lower_to_flat<T>(
        &self,
        _cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        _dst: &mut std::mem::MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        // An event only ever travels inside the batch's list, in memory.
        wasmtime::bail!("weir:filter events are lowered in a list only")
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        *cx.get::<{ FlatEvent::SIZE }>(offset) = self.0;
        Ok(())
    }

    fn linear_store_list_to_memory<T>(
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
        items: &[Self],
    ) -> wasmtime::Result<()> {
        let memory = cx.as_slice_mut();
        let Some(list) = memory.get_mut(offset..offset + items.len() * FlatEvent::SIZE) else {
            wasmtime::bail!("event list out of bounds");
        };
        for (slot, item) in list.chunks_exact_mut(FlatEvent::SIZE).zip(items) {
            slot.copy_from_slice(&item.0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_input_shares_one_buffer_and_one_table_of_places() {
        let london = Geo {
            country: Some("GB".into()),
            region: None,
            city: Some("London".into()),
        };
        let also_london = london.clone();
        let mut input = BatchInput::with_capacity("acme", "PERF", 7, 3);
        input.push(
            1 << 64 | 2,
            "a",
            Some("81.2.69.142".parse().unwrap()),
            Some(&london),
            b"{}",
        );
        input.push(
            3,
            "bb",
            Some("2001:db8::1".parse().unwrap()),
            Some(&also_london),
            br#"{"x":1}"#,
        );
        input.push(4, "", None, None, b"");
        let wit = input.as_wit();
        assert_eq!(
            (wit.tenant, wit.category, wit.received_at),
            ("acme", "PERF", 7)
        );
        let bytes = wit.bytes.to_vec();
        assert_eq!(bytes, br#"a{}bb{"x":1}"#);
        assert_eq!(wit.geos.len(), 1, "equal places are one entry");
        assert_eq!(wit.geos[0].city, Some("London"));
        let text = |span: Span| &bytes[span.offset as usize..(span.offset + span.len) as usize];
        let [a, b, c] = wit.events else {
            panic!("three events")
        };
        // Read back from the canonical ABI layout (see `FlatEvent`).
        let u32_at =
            |e: &FlatEvent, at: usize| u32::from_le_bytes(e.0[at..at + 4].try_into().unwrap());
        let span_at = |e: &FlatEvent, at: usize| Span {
            offset: u32_at(e, at),
            len: u32_at(e, at + 4),
        };
        let id_and_body = |e: &FlatEvent| (text(span_at(e, 16)), text(span_at(e, 52)));
        assert_eq!(id_and_body(a), (&b"a"[..], &b"{}"[..]));
        assert_eq!(id_and_body(b), (&b"bb"[..], &br#"{"x":1}"#[..]));
        assert_eq!(id_and_body(c), (&b""[..], &b""[..]));
        assert_eq!(
            a.0[..16],
            [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0],
            "backend id: the high word 1, then the low word 2, little-endian"
        );
        assert_eq!(
            (a.0[24], a.0[26], &a.0[28..32]),
            (1, 0, &[81, 2, 69, 142][..])
        );
        assert_eq!(
            (b.0[24], b.0[26], &b.0[28..32]),
            (1, 1, &[0x01, 0x20, 0xb8, 0x0d][..])
        );
        assert_eq!(&b.0[42..44], &[1, 0], "the last segment, 1, little-endian");
        assert_eq!(c.0[24], 0, "no client ip");
        assert_eq!((a.0[44], u32_at(a, 48), b.0[44], c.0[44]), (1, 0, 1, 0));
    }

    #[test]
    fn flat_events_have_the_event_abi() {
        let abi = <WitEvent as ComponentType>::ABI;
        assert_eq!((abi.size32 as usize, abi.align32), (FlatEvent::SIZE, 8));
    }
}
