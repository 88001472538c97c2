//! The store against real files and real fsync: framing and recovery after
//! every kind of damage a crash or a disk can leave, caps, the order of
//! progress and deletion, group commit, disk errors, and a property test
//! of crash recovery.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;

fn options(dir: &Path) -> SpoolOptions {
    SpoolOptions {
        path: dir.to_owned(),
        ..SpoolOptions::default()
    }
}

fn open(options: &SpoolOptions) -> (Arc<Spool>, Recovery) {
    Spool::open(options.clone()).expect("the spool opens")
}

fn read_all(spool: &Arc<Spool>) -> Vec<SpooledRecord> {
    let mut reader = spool.reader();
    let mut out = Vec::new();
    while let Some(record) = reader.next_record().expect("readable") {
        out.push(record);
    }
    out
}

fn payloads(records: &[SpooledRecord]) -> Vec<&[u8]> {
    records.iter().map(|r| r.payload.as_slice()).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[test]
fn spool_appends_read_back_in_order_and_acks_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let (spool, recovery) = open(&options);
    assert_eq!(recovery, Recovery::default());
    let seqs: Vec<u64> = ["one", "two", "three"]
        .iter()
        .map(|p| spool.append("acme", p.as_bytes()).unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        payloads(&read_all(&spool)),
        [b"one" as &[u8], b"two", b"three"]
    );
    assert_eq!(spool.ack(&[seqs[1], seqs[1], 999]).unwrap(), 1);
    assert!(matches!(
        spool.wait_durable(999),
        Err(SpoolError::NotWritten { .. })
    ));
    assert!(matches!(
        Spool::open(options.clone()),
        Err(SpoolError::InUse { .. })
    ));
    assert_eq!(payloads(&read_all(&spool)), [b"one" as &[u8], b"three"]);
    drop(spool);
    let (spool, recovery) = open(&options);
    assert_eq!(recovery.records, 2);
    let records = read_all(&spool);
    assert_eq!(payloads(&records), [b"one" as &[u8], b"three"]);
    assert_eq!(records[0].tenant, "acme");
    // New numbers continue after the old ones.
    assert!(spool.append("acme", b"four").unwrap() > seqs[2]);
}

#[test]
fn spool_a_reader_follows_appends_and_skips_acknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(&SpoolOptions {
        segment_bytes: 100,
        ..options(dir.path())
    });
    let mut reader = spool.reader();
    assert_eq!(reader.next_record().unwrap(), None);
    let a = spool.append("t", b"a").unwrap();
    let b = spool.append("t", &[b'b'; 60]).unwrap();
    let c = spool.append("t", &[b'c'; 60]).unwrap();
    assert_eq!(reader.next_record().unwrap().unwrap().seq, a);
    spool.ack(&[b]).unwrap();
    assert_eq!(reader.next_record().unwrap().unwrap().seq, c);
    assert_eq!(reader.next_record().unwrap(), None);
    let d = spool.append("t", b"d").unwrap();
    assert_eq!(reader.next_record().unwrap().unwrap().seq, d);
}

#[test]
fn spool_a_tail_cut_at_every_byte_of_the_last_record_is_cut_off() {
    let last = frame_len("tenant", b"the last record");
    for cut in 0..last {
        let dir = tempfile::tempdir().unwrap();
        let options = options(dir.path());
        let (spool, _) = open(&options);
        spool.append("tenant", b"first").unwrap();
        spool.append("tenant", b"second").unwrap();
        spool.append("tenant", b"the last record").unwrap();
        drop(spool);
        let file = &segments(dir.path())[0];
        let len = std::fs::metadata(file).unwrap().len();
        let at = len - last as u64 + cut as u64;
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .unwrap()
            .set_len(at)
            .unwrap();
        let (spool, recovery) = open(&options);
        assert_eq!(recovery.records, 2, "cut at {cut}");
        assert_eq!(recovery.torn_bytes, cut as u64, "cut at {cut}");
        assert_eq!(recovery.corrupt_records, 0, "cut at {cut}");
        spool.append("tenant", b"after").unwrap();
        let got = read_all(&spool);
        assert_eq!(
            payloads(&got),
            [b"first" as &[u8], b"second", b"after"],
            "cut at {cut}"
        );
    }
}

#[test]
fn spool_a_flipped_byte_skips_one_record_and_sets_its_segment_aside() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let (spool, _) = open(&options);
    for p in ["r1", "r2", "r3", "r4", "r5"] {
        spool.append("t", p.as_bytes()).unwrap();
    }
    drop(spool);
    let file = segments(dir.path()).remove(0);
    let mut bytes = std::fs::read(&file).unwrap();
    let third = 2 * frame_len("t", b"r1") + 20;
    bytes[third] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();

    let (spool, recovery) = open(&options);
    assert_eq!(recovery.corrupt_records, 1);
    assert_eq!(recovery.records, 4);
    assert_eq!(recovery.set_aside.len(), 1);
    assert_eq!(
        std::fs::read(&recovery.set_aside[0]).unwrap(),
        bytes,
        "original kept"
    );
    assert_eq!(
        payloads(&read_all(&spool)),
        [b"r1" as &[u8], b"r2", b"r4", b"r5"]
    );
    assert_eq!(spool.stats().corrupt_records, 1);
    drop(spool);
    // Rewritten clean: the damage is reported once.
    let (spool, recovery) = open(&options);
    assert_eq!((recovery.corrupt_records, recovery.records), (0, 4));
    assert_eq!(read_all(&spool).len(), 4);
}

#[test]
fn spool_a_damaged_length_does_not_lose_the_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let (spool, _) = open(&options);
    for p in ["r1", "r2", "r3"] {
        spool.append("t", p.as_bytes()).unwrap();
    }
    drop(spool);
    let file = segments(dir.path()).remove(0);
    let mut bytes = std::fs::read(&file).unwrap();
    // The first record's length now claims more than the whole file.
    bytes[6] = 0x7f;
    std::fs::write(&file, &bytes).unwrap();
    let (spool, recovery) = open(&options);
    assert_eq!((recovery.corrupt_records, recovery.torn_bytes), (1, 0));
    assert_eq!(payloads(&read_all(&spool)), [b"r2" as &[u8], b"r3"]);
}

#[test]
fn spool_a_deleted_segment_is_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    let options = SpoolOptions {
        segment_bytes: 64,
        ..options(dir.path())
    };
    let (spool, _) = open(&options);
    for i in 0..6u8 {
        spool.append("t", &[b'0' + i; 30]).unwrap();
    }
    drop(spool);
    let files = segments(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    std::fs::remove_file(&files[1]).unwrap();
    let (spool, recovery) = open(&options);
    assert_eq!(recovery.corrupt_records, 0);
    let got = read_all(&spool);
    assert_eq!(got.len() as u64, recovery.records);
    assert!(got.len() < 6 && got.windows(2).all(|w| w[0].seq < w[1].seq));
    spool.append("t", b"more").unwrap();
}

#[test]
fn spool_caps_refuse_without_writing_and_free_on_ack() {
    let dir = tempfile::tempdir().unwrap();
    let record = frame_len("a", &[0; 100]) as u64;
    let options = SpoolOptions {
        max_bytes: 5 * record,
        tenant_max_bytes: 2 * record,
        ..options(dir.path())
    };
    let (spool, _) = open(&options);
    let a1 = spool.append("a", &[0; 100]).unwrap();
    spool.append("a", &[0; 100]).unwrap();
    let before = spool.stats();
    let refused = spool.append("a", &[0; 100]).unwrap_err();
    assert!(matches!(&refused, SpoolError::TenantFull { tenant, .. } if tenant == "a"));
    assert!(refused.retryable() && refused.disk_fault().is_none());
    assert_eq!(spool.stats(), before, "nothing written");
    spool.append("b", &[0; 100]).unwrap();
    spool.append("b", &[0; 100]).unwrap();
    spool.append("c", &[0; 100]).unwrap();
    assert!(matches!(
        spool.append("d", b""),
        Err(SpoolError::Full { .. })
    ));
    assert_eq!(spool.tenant_bytes("a"), 2 * record);
    spool.ack(&[a1]).unwrap();
    assert_eq!(spool.tenant_bytes("a"), record);
    // The segment still holds the acknowledged record: the disk cap counts it.
    assert!(matches!(
        spool.append("a", &[0; 100]),
        Err(SpoolError::Full { .. })
    ));
    let huge = vec![0; options.segment_bytes as usize];
    assert!(matches!(
        spool.append("a", &huge),
        Err(SpoolError::TooLarge { .. })
    ));
}

#[test]
fn spool_segments_go_only_after_the_progress_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let options = SpoolOptions {
        segment_bytes: 64,
        ..options(dir.path())
    };
    let (spool, _) = open(&options);
    let seqs: Vec<u64> = (0..4u8)
        .map(|i| spool.append("t", &[i; 30]).unwrap())
        .collect();
    let first = segments(dir.path()).remove(0);
    let copy = std::fs::read(&first).unwrap();
    assert_eq!(spool.stats().segments, 4);
    spool.ack(&[seqs[0]]).unwrap();
    assert!(!first.exists(), "deleted once acknowledged");
    assert_eq!(spool.stats().segments, 3);
    // A crash between the progress fsync and the unlink: the file is back,
    // but the durable progress says its record is done.
    drop(spool);
    std::fs::write(&first, copy).unwrap();
    let (spool, recovery) = open(&options);
    assert_eq!(recovery.records, 3);
    assert!(!first.exists(), "deleted again at open");
    assert_eq!(
        read_all(&spool).iter().map(|r| r.seq).collect::<Vec<_>>(),
        seqs[1..]
    );
}

#[test]
fn spool_concurrent_waiters_share_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(&options(dir.path()));
    let seqs: Vec<u64> = (0..3).map(|_| spool.write("t", b"x").unwrap()).collect();
    let syncs = spool.stats().syncs;
    std::thread::scope(|s| {
        for &seq in &seqs {
            let spool = &spool;
            s.spawn(move || spool.wait_durable(seq).unwrap());
        }
    });
    assert_eq!(spool.stats().syncs, syncs + 1);
    assert_eq!(read_all(&spool).len(), 3);
}

#[test]
fn spool_many_appenders_group_their_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(&options(dir.path()));
    std::thread::scope(|s| {
        for t in 0..8 {
            let spool = &spool;
            s.spawn(move || {
                for i in 0..50 {
                    spool
                        .append(&format!("t{t}"), format!("{i}").as_bytes())
                        .unwrap();
                }
            });
        }
    });
    let stats = spool.stats();
    assert_eq!(stats.records, 400);
    assert!(stats.syncs <= 400, "{stats:?}");
    assert_eq!(read_all(&spool).len(), 400);
}

#[test]
fn spool_disk_errors_are_typed_and_leave_the_store_usable() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let (spool, _) = open(&options);
    let kept = spool.append("t", b"kept").unwrap();
    let before = spool.stats();
    let real = spool.lock().active.file.clone();
    let full = std::sync::Arc::new(
        std::fs::OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .unwrap(),
    );
    // A full disk at write time.
    spool.lock().active.file = full.clone();
    let error = spool.append("t", b"lost").unwrap_err();
    assert_eq!(error.disk_fault(), Some(DiskFault::Full), "{error}");
    assert!(
        error.to_string().contains(".seg"),
        "names the file: {error}"
    );
    assert_eq!(spool.stats(), before);
    // A failed fsync: the record written before it is given up.
    spool.lock().active.file = real.clone();
    let seq = spool.write("t", b"unsynced").unwrap();
    spool.lock().active.file = full;
    assert!(spool.wait_durable(seq).is_err());
    assert!(
        spool.wait_durable(seq).is_err(),
        "still failed for a late waiter"
    );
    assert_eq!(spool.ack(&[seq]).unwrap(), 0, "never acknowledged");
    spool.lock().active.file = real;
    assert_eq!(spool.stats().records, 1);
    let after = spool.append("t", b"after").unwrap();
    let got = read_all(&spool);
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [kept, after]);
    drop(spool);
    let (spool, recovery) = open(&options);
    assert_eq!((recovery.records, recovery.corrupt_records), (2, 0));
    assert_eq!(payloads(&read_all(&spool)), [b"kept" as &[u8], b"after"]);
}

mod crash {
    //! Any sequence of writes, syncs, acknowledgements and crashes (a
    //! crash: the store dropped, the newest segment cut at any byte past
    //! its durable length, or not cut) recovers exactly the durable,
    //! unacknowledged records, in order.

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// A record written, not yet waited for.
        Write {
            tenant: u8,
            len: u8,
        },
        Sync,
        /// Acknowledge a pending record, picked by index.
        Ack(usize),
        /// Crash, cutting the newest segment (picked by a number) or not.
        Crash(Option<u16>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3u8, 0..80u8).prop_map(|(tenant, len)| Op::Write { tenant, len }),
            1 => Just(Op::Sync),
            2 => any::<usize>().prop_map(Op::Ack),
            1 => proptest::option::of(any::<u16>()).prop_map(Op::Crash),
        ]
    }

    /// A record as the model knows it.
    type Model = Vec<(u64, String, Vec<u8>)>;

    fn record(seq: u64, tenant: u8, len: u8) -> (u64, String, Vec<u8>) {
        (
            seq,
            format!("tenant-{tenant}"),
            vec![seq as u8; len as usize],
        )
    }

    fn check(spool: &Arc<Spool>, durable: &Model) {
        let got: Model = read_all(spool)
            .into_iter()
            .map(|r| (r.seq, r.tenant, r.payload))
            .collect();
        assert_eq!(&got, durable);
        assert_eq!(spool.stats().records, durable.len() as u64);
    }

    /// Drops the spool and maybe cuts the newest segment past its durable
    /// length; the records that survive whole are durable from then on.
    fn crash(spool: Arc<Spool>, cut: Option<u16>, unsynced: &mut Model, durable: &mut Model) {
        let (path, synced) = spool.durable_len();
        drop(spool);
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        let keep = match cut {
            Some(n) if len > synced => synced + u64::from(n) % (len - synced + 1),
            _ => len,
        };
        if keep < len {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(keep).unwrap();
        }
        let mut end = synced;
        for (seq, tenant, payload) in unsynced.drain(..) {
            end += frame_len(&tenant, &payload) as u64;
            if end <= keep {
                durable.push((seq, tenant, payload));
            }
        }
    }

    fn run(ops: Vec<Op>) {
        let dir = tempfile::tempdir().unwrap();
        let options = SpoolOptions {
            segment_bytes: 256,
            ..options(dir.path())
        };
        let (mut spool, _) = open(&options);
        let (mut durable, mut unsynced): (Model, Model) = (Vec::new(), Vec::new());
        let (mut last_seq, mut acked_max) = (None, None);
        for op in ops {
            match op {
                Op::Write { tenant, len } => {
                    let before = spool.durable_len().0;
                    let seq = spool.next_seq_for_test();
                    let (seq2, t, payload) = record(seq, tenant, len);
                    assert_eq!(spool.write(&t, &payload).unwrap(), seq2);
                    // Numbers increase; a crash may reuse those of records
                    // it lost (never durable, so never acknowledged).
                    assert!(last_seq.is_none_or(|l| seq > l), "numbers increase");
                    last_seq = Some(seq);
                    if spool.durable_len().0 != before {
                        // A roll fsyncs the segment it closes.
                        durable.append(&mut unsynced);
                    }
                    unsynced.push((seq, t, payload));
                }
                Op::Sync => {
                    spool.sync().unwrap();
                    durable.append(&mut unsynced);
                }
                Op::Ack(pick) if !durable.is_empty() => {
                    let (seq, ..) = durable.remove(pick % durable.len());
                    assert_eq!(spool.ack(&[seq]).unwrap(), 1);
                    acked_max = acked_max.max(Some(seq));
                }
                Op::Ack(_) => {
                    if let Some((seq, ..)) = unsynced.first() {
                        assert_eq!(spool.ack(&[*seq]).unwrap(), 0, "not durable yet");
                    }
                }
                Op::Crash(cut) => {
                    crash(spool, cut, &mut unsynced, &mut durable);
                    last_seq = durable.last().map(|r| r.0).max(acked_max);
                    spool = open(&options).0;
                    check(&spool, &durable);
                }
            }
        }
        crash(spool, None, &mut unsynced, &mut durable);
        let (spool, _) = open(&options);
        check(&spool, &durable);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 128,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn spool_recovers_exactly_the_durable_unacknowledged_records(
            ops in proptest::collection::vec(op(), 1..60)
        ) {
            run(ops);
        }
    }
}
