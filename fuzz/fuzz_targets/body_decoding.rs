//! Decode a body (gzip, zstd or identity) under a decompressed cap.
//!
//! Never a panic; never more allocated while decoding than the cap plus a
//! bounded margin (the input, the decoder's window and state), counted by
//! a counting allocator; what is decoded is what was compressed, and a
//! body that decodes to more than the cap is refused with 413.
//!
//! The input's first byte picks the encoding, the cap and whether the rest
//! is the compressed stream itself (libFuzzer mutates the stream: headers,
//! block types, windows, checksums) or data this target compresses first
//! (the round trip).
#![no_main]

use std::io::Write;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use weir_core::encoding::{decompress, Encoding};
use weir_fuzz::Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Caps to decode under: tiny, a few pages, and the default 10 MiB.
const CAPS: [usize; 4] = [0, 100, 64 * 1024, 10 * 1024 * 1024];

/// Beyond the cap, what decoding may hold at once: the output buffer's
/// last growth (it doubles up to the cap, so the old half is copied while
/// the whole is held), the decoder's state (zlib's 32 KiB window and
/// tables, zstd's contexts: under 1 MiB) and, for zstd, a window of at most
/// 8 MiB for caps up to 8 MiB (`zstd_window_log`), 16 MiB at the default
/// cap. The input is the caller's and not counted.
fn margin(encoding: Encoding, cap: usize) -> usize {
    let window = match encoding {
        Encoding::Zstd if cap <= 8 << 20 => 8 << 20,
        Encoding::Zstd => 16 << 20,
        _ => 0,
    };
    (cap + 1) / 2 + window + (1 << 20)
}

fuzz_target!(|input: &[u8]| {
    let Some((&choice, rest)) = input.split_first() else {
        return;
    };
    let encoding = match choice % 3 {
        0 => Encoding::Identity,
        1 => Encoding::Gzip,
        _ => Encoding::Zstd,
    };
    let cap = CAPS[usize::from(choice / 3) % CAPS.len()];
    let round_trip = choice >= 128;
    let raw = match (round_trip, encoding) {
        (true, Encoding::Gzip) => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(rest).expect("in memory");
            e.finish().expect("in memory")
        }
        (true, Encoding::Zstd) => zstd::encode_all(rest, 1).expect("in memory"),
        _ => rest.to_vec(),
    };
    let raw = Bytes::from(raw);
    let base = Counting::live();
    Counting::reset();
    let decoded = decompress(raw.clone(), encoding, cap);
    let peak = Counting::peak_above(base);
    assert!(
        peak <= cap + margin(encoding, cap),
        "{encoding:?} under a cap of {cap}: {peak} bytes live at once"
    );
    match decoded {
        Ok(out) => {
            assert!(out.len() <= cap || encoding == Encoding::Identity);
            if round_trip || encoding == Encoding::Identity {
                assert_eq!(&out[..], rest);
            }
        }
        Err(refused) => {
            let status = refused.status.as_u16();
            assert!(
                status == 400 || status == 413,
                "{status}: {}",
                refused.message
            );
            if round_trip {
                // What this target compressed is valid: only its size can fail.
                assert_eq!(status, 413, "{}", refused.message);
                assert!(rest.len() > cap, "{} bytes refused under {cap}", rest.len());
            }
        }
    }
});
