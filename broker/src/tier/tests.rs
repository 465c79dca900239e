//! Storage tests. Each is written once as `async fn name(t: TierStore)` and run by
//! `storage_tests!` against `memory://` (under a non-empty key prefix) and against
//! `file://` (a temporary directory, through `LocalConditionalStore`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutPayload, UpdateVersion};
use proptest::prelude::*;
use serde_json::json;

use super::versioned::is_conflict;
use super::*;

/// A store for one test; a `file://` one lives in a temporary directory kept with it.
pub(crate) struct Backend {
    pub(crate) tier: TierStore,
    _dir: Option<tempfile::TempDir>,
}

pub(crate) fn memory() -> Backend {
    let (store, prefix) = open_store("memory://", &StoreOptions::default()).unwrap();
    assert_eq!(prefix, Path::default());
    Backend { tier: TierStore::new(store, Path::from("tier-tests/prefix")), _dir: None }
}

pub(crate) fn file() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/store", dir.path().display());
    let (store, prefix) = open_store(&url, &StoreOptions::default()).unwrap();
    Backend { tier: TierStore::new(store, prefix), _dir: Some(dir) }
}

/// Runs each `async fn name(t: TierStore)` of the calling module on both backends (the
/// caller imports `memory` and `file`).
macro_rules! storage_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let b = super::memory();
                    super::$name(b.tier.clone()).await;
                }
            )*
        }
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let b = super::file();
                    super::$name(b.tier.clone()).await;
                }
            )*
        }
    };
}
pub(crate) use storage_tests;

storage_tests!(
    cluster_token_key_one_winner,
    conditional_put_semantics,
    manifest_create_and_update,
    manifest_concurrent_appends,
    manifest_race_two_handles,
    ownership_race_one_winner,
    takeover_upload_passes_a_former_owners_unlisted_object,
    stale_epoch_refused,
    incarnation_pinned,
    segment_round_trip_all_compressions,
    segment_idempotent_reupload,
    segment_conflicting_reupload,
    segment_multipart,
    retention_and_sweep,
    stream_meta_create_update_list,
    wal_objects_put_list_read_delete,
    remote_ranged_read_of_one_frame,
    remote_read_across_segments,
    remote_cache_accounting_and_bound,
    remote_reads_whole_file_objects,
    remote_fetch_errors_are_transient,
);

fn fake_seg(base: u64, end: u64) -> SegmentRef {
    SegmentRef {
        base_offset: base,
        end_offset: end,
        first_ts_ms: base,
        last_ts_ms: end,
        records: end - base,
        raw_bytes: 1,
        stored_bytes: 1,
        compression: Compression::None,
        key: layout::segment_key("s", "sh", base, 1),
    }
}

/// A segment file (whole, CRC-valid records) of exactly `len` bytes (`len` >= 29), compressible
/// but not trivially.
fn sample(len: usize, salt: u8) -> Bytes {
    records_of(len, salt, |i| ((i / 7) as u8).wrapping_mul(31) ^ salt ^ ((i % 13) as u8))
}

/// Like [`sample`], with data that does not compress.
fn noisy(len: usize, salt: u8) -> Bytes {
    records_of(len, salt, |i| ((i as u32 ^ salt as u32).wrapping_mul(2_654_435_761) >> 13) as u8)
}

fn records_of(len: usize, salt: u8, byte: impl Fn(usize) -> u8) -> Bytes {
    const OVERHEAD: usize = crate::log::record::HEADER_LEN + 3; // key "key"
    assert!(len >= OVERHEAD);
    let mut buf = Vec::with_capacity(len);
    let mut at = 0usize;
    let mut offset = 0u64;
    while len - buf.len() >= OVERHEAD {
        let left = len - buf.len();
        let n = if left >= 2 * (OVERHEAD + 200) { 200 } else { left - OVERHEAD };
        let data: Vec<u8> = (at..at + n).map(&byte).collect();
        at += n;
        crate::log::record::encode(&mut buf, offset, 1000 + salt as i64, b"key", &data);
        offset += 1;
    }
    assert_eq!(buf.len(), len);
    buf.into()
}

fn upload_req(base: u64, end: u64, ts: u64, compression: Compression, data: Bytes) -> SegmentUpload {
    SegmentUpload {
        stream: "s".into(),
        shard: "sh".into(),
        epoch: 1,
        base_offset: base,
        end_offset: end,
        first_ts_ms: ts.saturating_sub(100),
        last_ts_ms: ts,
        records: end - base,
        compression,
        data: SegmentData::Bytes(data),
    }
}

// ---------------------------------------------------------------------------------

/// The raw store gives create-if-absent and ETag compare-and-swap (for file://,
/// through LocalConditionalStore), with no repeated ETags.
async fn conditional_put_semantics(t: TierStore) {
    let s = t.store().clone();
    let p = t.path("x/doc.json");
    let put = |mode: PutMode, body: &'static str| {
        let (s, p) = (s.clone(), p.clone());
        async move { s.put_opts(&p, PutPayload::from_static(body.as_bytes()), mode.into()).await }
    };
    let v1: UpdateVersion = put(PutMode::Create, "aaaa").await.unwrap().into();
    assert!(matches!(put(PutMode::Create, "zzzz").await, Err(object_store::Error::AlreadyExists { .. })));
    let v2: UpdateVersion = put(PutMode::Update(v1.clone()), "bbbb").await.unwrap().into();
    let v3: UpdateVersion = put(PutMode::Update(v2.clone()), "aaaa").await.unwrap().into();
    for stale in [&v1, &v2] {
        let e = put(PutMode::Update(stale.clone()), "cccc").await.unwrap_err();
        assert!(matches!(e, object_store::Error::Precondition { .. }), "{e}");
    }
    let got = s.get(&p).await.unwrap();
    assert_eq!(got.meta.e_tag, v3.e_tag, "GET reports the ETag the update returned");
    assert_eq!(&got.bytes().await.unwrap()[..], b"aaaa");

    // Many same-size updates in a row: every ETag is new.
    let mut seen: HashSet<String> = [&v1, &v2, &v3].iter().map(|v| v.e_tag.clone().unwrap()).collect();
    let mut v = v3;
    for i in 0..30 {
        let body: &'static str = if i % 2 == 0 { "dddd" } else { "eeee" };
        v = put(PutMode::Update(v), body).await.unwrap().into();
        assert!(seen.insert(v.e_tag.clone().unwrap()), "ETag repeated after {i} updates");
    }

    // Update of a missing object is a conflict, not a create.
    let missing = t.path("x/missing.json");
    let e = s.put_opts(&missing, PutPayload::from_static(b"x"), PutMode::Update(v.clone()).into()).await.unwrap_err();
    assert!(is_conflict(&e), "{e}");
    assert!(s.head(&missing).await.is_err());

    // Eight writers with the same version: exactly one wins.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (s, p, v) = (s.clone(), p.clone(), v.clone());
            tokio::spawn(async move {
                s.put_opts(&p, PutPayload::from(format!("writer-{i}")), PutMode::Update(v).into()).await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => assert!(matches!(e, object_store::Error::Precondition { .. }), "{e}"),
        }
    }
    assert_eq!(wins, 1);
}

async fn manifest_create_and_update(t: TierStore) {
    let m = t.manifest("s", "sh").unwrap();
    assert!(m.load().await.unwrap().is_none());
    let u = m.append_segment(1, fake_seg(0, 10)).await.unwrap();
    assert!(u.written && u.value && u.conflicts == 0);
    assert_eq!(u.doc.version, 1);
    let (doc, ver) = m.load().await.unwrap().unwrap();
    assert_eq!(doc, u.doc);
    assert_eq!(Some(ver.clone()), u.version);
    assert_eq!(doc.shard, "sh");
    assert_eq!(doc.epoch, 1);

    let u = m.append_segment(1, fake_seg(10, 20)).await.unwrap();
    assert_eq!(u.doc.version, 2);
    assert_ne!(u.version, Some(ver));
    // idempotent: listing again writes nothing
    let again = m.append_segment(1, fake_seg(10, 20)).await.unwrap();
    assert!(!again.written && !again.value);
    assert_eq!(again.doc.version, 2);
    // a refusal from the closure passes through, nothing written
    let e = m.update(|_| -> Result<()> { Err(TierError::Rejected { reason: "no".into() }) }).await.unwrap_err();
    assert!(matches!(e, TierError::Rejected { .. }));
    let e = m.append_segment(1, fake_seg(15, 25)).await.unwrap_err();
    assert!(matches!(e, TierError::Conflict { .. }), "{e}");
    let (doc, _) = m.load().await.unwrap().unwrap();
    assert_eq!(doc.version, 2);
    assert_eq!(doc.segments.len(), 2);
    assert_eq!(m.conflicts(), 0);
    // The stored JSON is at the documented key.
    let raw = t.store().get(&t.path(&layout::manifest_key("s", "sh"))).await.unwrap().bytes().await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["segments"][1]["end_offset"], 20);
}

/// Eight tasks with their own handles each append six distinct segments: every
/// append is present exactly once and every write bumped the generation once.
async fn manifest_concurrent_appends(t: TierStore) {
    // Eight writers hammering one manifest is far more contention than production
    // (one owner per shard); allow more attempts than the default so that a loaded
    // CI machine cannot make a writer lose ten times in a row.
    let retry = RetryPolicy { max_attempts: 40, ..RetryPolicy::default() };
    let t =
        TierStore::with_options(t.store().clone(), t.prefix().clone(), TierOptions { retry, ..TierOptions::default() });
    const WRITERS: u64 = 8;
    const EACH: u64 = 6;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let h = t.manifest("s", "sh").unwrap();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let base = (i * WRITERS + w) * 10;
                    let u = h.append_segment(1, fake_seg(base, base + 10)).await.unwrap();
                    assert!(u.written && u.value);
                }
                h.conflicts()
            })
        })
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let (m, _) = t.manifest("s", "sh").unwrap().load().await.unwrap().unwrap();
    let bases: Vec<u64> = m.segments.iter().map(|s| s.base_offset).collect();
    let want: Vec<u64> = (0..WRITERS * EACH).map(|i| i * 10).collect();
    assert_eq!(bases, want);
    assert_eq!(m.version, WRITERS * EACH, "one write per append ({conflicts} lost races retried)");
}

/// Two handles both read version V, then both write: one wins, the other gets a
/// precondition failure, re-reads and writes on top.
async fn manifest_race_two_handles(t: TierStore) {
    let a = t.manifest("s", "sh").unwrap();
    let b = t.manifest("s", "sh").unwrap();
    a.append_segment(1, fake_seg(0, 10)).await.unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let calls = Arc::new(AtomicUsize::new(0));
    let run = |h: ManifestStore, seg: SegmentRef| {
        let (barrier, calls) = (barrier.clone(), calls.clone());
        tokio::spawn(async move {
            let mut first = true;
            h.update(move |m| {
                calls.fetch_add(1, Ordering::SeqCst);
                if std::mem::take(&mut first) {
                    // both handles have loaded V before either writes
                    tokio::task::block_in_place(|| barrier.wait());
                }
                m.claim_epoch(1)?;
                m.insert_segment(seg.clone())
            })
            .await
            .unwrap()
        })
    };
    let ta = run(a.clone(), fake_seg(10, 20));
    let tb = run(b.clone(), fake_seg(20, 30));
    let (ua, ub) = (ta.await.unwrap(), tb.await.unwrap());
    let mut per_writer = [ua.conflicts, ub.conflicts];
    per_writer.sort();
    assert_eq!(per_writer, [0, 1], "exactly one writer lost once");
    assert_eq!(a.conflicts() + b.conflicts(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "loser's closure ran again on the winner's version");
    let (m, _) = a.load().await.unwrap().unwrap();
    assert_eq!(m.segments.len(), 3);
    assert_eq!(m.version, 3);
}

/// Eight brokers (separate handles) take the same shard from the same epoch at once:
/// exactly one wins, the others are told who did, and the loser's old epoch is fenced.
async fn ownership_race_one_winner(t: TierStore) {
    let seen = t.manifest("s", "sh").unwrap().load().await.unwrap().map_or(0, |(m, _)| m.epoch);
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let claims: Vec<_> = (0..8)
        .map(|i| {
            let (h, barrier) = (t.manifest("s", "sh").unwrap(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                (format!("broker-{i}"), h.take_ownership(&format!("broker-{i}"), seen).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for claim in claims {
        match claim.await.unwrap() {
            (who, Ok(epoch)) => winners.push((who, epoch)),
            (_, Err(TierError::Conflict { reason, .. })) => {
                assert!(reason.contains("ownership taken by broker-"), "{reason}")
            }
            (_, Err(e)) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner: {winners:?}");
    let (winner, epoch) = winners.pop().unwrap();
    assert_eq!(epoch, seen + 1);
    let (doc, _) = t.manifest("s", "sh").unwrap().load().await.unwrap().unwrap();
    assert_eq!((doc.owner.as_deref(), doc.epoch), (Some(winner.as_str()), epoch));
    // A later claim from the new epoch wins and fences the previous owner's writes.
    let next = t.manifest("s", "sh").unwrap();
    assert_eq!(next.take_ownership("broker-next", epoch).await.unwrap(), epoch + 1);
    let fenced = next.append_segment(epoch, fake_seg(0, 10)).await.unwrap_err();
    assert!(matches!(fenced, TierError::StaleEpoch { .. }), "{fenced}");
}

/// A former owner crashed between a segment's object and its manifest entry; the broker that
/// took the shard over uploads its own, different segment at the same base: no conflict,
/// the manifest lists the new owner's object.
async fn takeover_upload_passes_a_former_owners_unlisted_object(t: TierStore) {
    let left = t.path(&layout::segment_key("s", "sh", 0, 1));
    t.store().put(&left, PutPayload::from(sample(1000, 7))).await.unwrap();
    let m = t.manifest("s", "sh").unwrap();
    m.claim_epoch(2).await.unwrap();
    let mut req = upload_req(0, 15, 1000, Compression::Zstd, sample(2000, 8));
    req.epoch = 2;
    let report = t.upload_segment(req).await.unwrap();
    assert_eq!(report.segment.key, layout::segment_key("s", "sh", 0, 2));
    let (doc, _) = m.load().await.unwrap().unwrap();
    assert_eq!(doc.segments.len(), 1);
    assert_eq!(t.download_segment(&doc.segments[0]).await.unwrap(), sample(2000, 8));
}

async fn stale_epoch_refused(t: TierStore) {
    let m = t.manifest("s", "sh").unwrap();
    m.claim_epoch(5).await.unwrap();
    let e = m.append_segment(4, fake_seg(0, 10)).await.unwrap_err();
    assert!(matches!(e, TierError::StaleEpoch { current: 5, attempted: 4, .. }), "{e}");
    assert!(matches!(m.claim_epoch(3).await, Err(TierError::StaleEpoch { .. })));
    assert_eq!(m.conflicts(), 0, "refusals are not retried");
    let (doc, _) = m.load().await.unwrap().unwrap();
    assert!(doc.segments.is_empty());
    assert_eq!(doc.version, 1);
    // a higher epoch fences the old owner
    m.append_segment(6, fake_seg(0, 10)).await.unwrap();
    assert!(matches!(m.append_segment(5, fake_seg(10, 20)).await, Err(TierError::StaleEpoch { .. })));
    // uploads check the epoch before uploading anything
    let e = t.upload_segment(upload_req(10, 20, 1, Compression::Zstd, sample(1000, 1))).await.unwrap_err();
    assert!(matches!(e, TierError::StaleEpoch { .. }), "{e}");
    assert!(t.store().head(&t.path(&layout::segment_key("s", "sh", 10, 1))).await.is_err());
    // and retention too
    assert!(matches!(t.delete_before("s", "sh", 5, u64::MAX).await, Err(TierError::StaleEpoch { .. })));
}

async fn incarnation_pinned(t: TierStore) {
    let m = t.manifest("s", "sh").unwrap().with_stream_incarnation(7);
    m.claim_epoch(1).await.unwrap();
    assert_eq!(m.load().await.unwrap().unwrap().0.stream_incarnation, 7);
    let other = t.manifest("s", "sh").unwrap().with_stream_incarnation(8);
    assert!(matches!(other.claim_epoch(2).await, Err(TierError::Conflict { .. })));
}

async fn segment_round_trip_all_compressions(t: TierStore) {
    let mut base = 0;
    for (i, c) in [Compression::Zstd, Compression::Lz4, Compression::None].into_iter().enumerate() {
        let data = sample(200_000 + i, i as u8);
        let r = t.upload_segment(upload_req(base, base + 100, 1000, c, data.clone())).await.unwrap();
        assert_eq!(r.segment.compression, c);
        assert_eq!(r.raw_bytes, data.len() as u64);
        assert_eq!(r.uploaded_bytes, r.stored_bytes);
        assert!(!r.object_existed && !r.already_listed && !r.multipart);
        if c != Compression::None {
            assert!(r.stored_bytes < r.raw_bytes / 2, "{c}: {} of {}", r.stored_bytes, r.raw_bytes);
        }
        let back = t.download_segment(&r.segment).await.unwrap();
        assert_eq!(back, data);
        let part = t.read_range(&r.segment, 1000..1100).await.unwrap();
        assert_eq!(part, data.slice(1000..1100));
        assert_eq!(t.read_range(&r.segment, 199_990..u64::MAX).await.unwrap(), data.slice(199_990..));
        base += 100;
    }
    // from a file on disk
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("00000000000000000300.log");
    let data = sample(50_000, 9);
    std::fs::write(&f, &data).unwrap();
    let mut req = upload_req(300, 400, 1000, Compression::Zstd, Bytes::new());
    req.data = SegmentData::File(f);
    let r = t.upload_segment(req).await.unwrap();
    assert_eq!(t.download_segment(&r.segment).await.unwrap(), data);
    let (m, _) = t.manifest("s", "sh").unwrap().load().await.unwrap().unwrap();
    assert_eq!(m.segments.len(), 4);
    assert_eq!(m.find(350).unwrap().key, layout::segment_key("s", "sh", 300, 1));
    assert!(m.segments[0].key.ends_with("segments/00000000000000000000-1.seg"), "{}", m.segments[0].key);
}

async fn segment_idempotent_reupload(t: TierStore) {
    let data = sample(30_000, 3);
    let first = t.upload_segment(upload_req(0, 10, 1000, Compression::Zstd, data.clone())).await.unwrap();
    // fully done already: nothing is uploaded or written
    let again = t.upload_segment(upload_req(0, 10, 1000, Compression::Zstd, data.clone())).await.unwrap();
    assert!(again.already_listed);
    assert_eq!(again.segment, first.segment);
    // crash after the object, before the manifest: the object exists, the manifest does not list it
    let r = t.upload_segment(upload_req(10, 20, 1000, Compression::Lz4, sample(30_000, 4))).await.unwrap();
    t.manifest("s", "sh")
        .unwrap()
        .update(|m| {
            m.segments.retain(|s| s.base_offset != 10);
            Ok(())
        })
        .await
        .unwrap();
    let retry = t.upload_segment(upload_req(10, 20, 1000, Compression::Lz4, sample(30_000, 4))).await.unwrap();
    assert!(retry.object_existed && !retry.already_listed);
    assert_eq!(retry.segment, r.segment);
    // ...even when the retry asks for another compression: the stored one is recorded
    t.manifest("s", "sh")
        .unwrap()
        .update(|m| {
            m.segments.retain(|s| s.base_offset != 10);
            Ok(())
        })
        .await
        .unwrap();
    let retry = t.upload_segment(upload_req(10, 20, 1000, Compression::Zstd, sample(30_000, 4))).await.unwrap();
    assert!(retry.object_existed);
    assert_eq!(retry.segment.compression, Compression::Lz4);
    assert_eq!(t.download_segment(&retry.segment).await.unwrap(), sample(30_000, 4));
    let (m, _) = t.manifest("s", "sh").unwrap().load().await.unwrap().unwrap();
    assert_eq!(m.segments.len(), 2);
}

async fn segment_conflicting_reupload(t: TierStore) {
    t.upload_segment(upload_req(0, 10, 1000, Compression::Zstd, sample(10_000, 1))).await.unwrap();
    // same key, different bytes
    let e = t.upload_segment(upload_req(0, 10, 1000, Compression::Zstd, sample(10_000, 2))).await.unwrap_err();
    assert!(matches!(e, TierError::Conflict { .. }), "{e}");
    // a stray object under a new key with other content
    let key = t.path(&layout::segment_key("s", "sh", 10, 1));
    t.store().put(&key, PutPayload::from_static(b"garbage")).await.unwrap();
    let e = t.upload_segment(upload_req(10, 20, 1000, Compression::Lz4, sample(10_000, 3))).await.unwrap_err();
    assert!(matches!(e, TierError::Conflict { .. }), "{e}");
    // overlapping offsets are refused by the manifest
    let e = t.upload_segment(upload_req(5, 15, 1000, Compression::None, sample(100, 4))).await.unwrap_err();
    assert!(matches!(e, TierError::Conflict { .. }), "{e}");
    let (m, _) = t.manifest("s", "sh").unwrap().load().await.unwrap().unwrap();
    assert_eq!(m.segments.len(), 1);
    assert_eq!(t.download_segment(&m.segments[0]).await.unwrap(), sample(10_000, 1));
}

async fn segment_multipart(t: TierStore) {
    let t = TierStore::with_options(
        t.store().clone(),
        t.prefix().clone(),
        TierOptions { multipart_threshold: 64 << 10, multipart_part_size: 32 << 10, ..TierOptions::default() },
    );
    let data = noisy(300_000, 0);
    let r = t.upload_segment(upload_req(0, 10, 1000, Compression::None, data.clone())).await.unwrap();
    assert!(r.multipart);
    assert_eq!(t.download_segment(&r.segment).await.unwrap(), data);
    // re-upload after "losing" the manifest entry: HEAD finds the object, content matches
    t.manifest("s", "sh")
        .unwrap()
        .update(|m| {
            m.segments.clear();
            Ok(())
        })
        .await
        .unwrap();
    let again = t.upload_segment(upload_req(0, 10, 1000, Compression::None, data.clone())).await.unwrap();
    assert!(again.object_existed && again.uploaded_bytes == 0);
    // different content under the same key is refused on this path too
    t.manifest("s", "sh")
        .unwrap()
        .update(|m| {
            m.segments.clear();
            Ok(())
        })
        .await
        .unwrap();
    let other = noisy(300_000, 1);
    assert!(matches!(
        t.upload_segment(upload_req(0, 10, 1000, Compression::None, other)).await,
        Err(TierError::Conflict { .. })
    ));
}

async fn retention_and_sweep(t: TierStore) {
    let mut segs = Vec::new();
    for i in 0..4u64 {
        let r = t
            .upload_segment(upload_req(i * 10, i * 10 + 10, (i + 1) * 1000, Compression::Zstd, sample(5000, i as u8)))
            .await
            .unwrap();
        segs.push(r.segment);
    }
    let exists = |seg: &SegmentRef| {
        let (s, p) = (t.store().clone(), t.path(&seg.key));
        async move { s.head(&p).await.is_ok() }
    };
    assert!(t.delete_before("s", "sh", 1, 500).await.unwrap().removed.is_empty());
    let r = t.delete_before("s", "sh", 1, 2500).await.unwrap();
    assert_eq!(r.removed, segs[..2].to_vec());
    assert_eq!((r.deleted_objects, r.failed_deletes, r.trimmed_before_offset), (2, 0, 20));
    assert_eq!(r.freed_stored_bytes, segs[0].stored_bytes + segs[1].stored_bytes);
    assert!(!exists(&segs[0]).await && !exists(&segs[1]).await);
    assert!(exists(&segs[2]).await && exists(&segs[3]).await);
    let (m, _) = t.manifest("s", "sh").unwrap().load().await.unwrap().unwrap();
    assert_eq!(m.segments, segs[2..].to_vec());
    assert_eq!(m.trimmed_before_offset, 20);

    // Orphans: an object from a crash between manifest update and delete, and one
    // from a re-upload below the trim point (object written, manifest refused).
    t.store().put(&t.path(&segs[0].key), PutPayload::from_static(b"left behind")).await.unwrap();
    let e = t.upload_segment(upload_req(10, 20, 2000, Compression::Zstd, sample(5000, 1))).await.unwrap_err();
    assert!(matches!(e, TierError::Conflict { .. }), "{e}");
    let young = t.sweep_orphans("s", "sh", Duration::from_secs(3600)).await.unwrap();
    assert_eq!((young.scanned, young.too_young, young.deleted.len()), (4, 2, 0));
    let swept = t.sweep_orphans("s", "sh", Duration::ZERO).await.unwrap();
    let mut deleted = swept.deleted.clone();
    deleted.sort();
    assert_eq!(deleted, vec![t.path(&segs[0].key).to_string(), t.path(&segs[1].key).to_string()]);
    assert!(!exists(&segs[0]).await && !exists(&segs[1]).await);
    for s in &segs[2..] {
        assert_eq!(t.download_segment(s).await.unwrap(), sample(5000, (s.base_offset / 10) as u8));
    }
    // a shard with nothing uploaded sweeps nothing; retention without a manifest creates none
    assert_eq!(t.sweep_orphans("s", "other", Duration::ZERO).await.unwrap().scanned, 0);
    t.delete_before("s", "other", 1, u64::MAX).await.unwrap();
    assert!(t.manifest("s", "other").unwrap().load().await.unwrap().is_none());
    // everything expires
    let r = t.delete_before("s", "sh", 1, u64::MAX).await.unwrap();
    assert_eq!(r.removed.len(), 2);
    assert_eq!(r.trimmed_before_offset, 40);
}

async fn stream_meta_create_update_list(t: TierStore) {
    assert!(t.list_streams().await.unwrap().is_empty());
    let orders = t.stream_meta("orders").unwrap();
    assert!(orders.load().await.unwrap().is_none());
    orders.create(json!({"shards": 2, "retention_hours": 24})).await.unwrap();
    assert!(matches!(orders.create(json!({})).await, Err(TierError::Conflict { .. })));
    let u = orders
        .update(|v| {
            v["shards"] = json!(4);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(u.doc.version, 2);
    let (doc, _) = orders.load().await.unwrap().unwrap();
    assert_eq!(doc.meta, json!({"shards": 4, "retention_hours": 24}));
    assert_eq!(doc.version, 2);
    // a refusing closure passes its error through
    assert!(matches!(
        orders.update(|_| -> Result<()> { Err(TierError::Rejected { reason: "paused".into() }) }).await,
        Err(TierError::Rejected { .. })
    ));
    let ghost = t.stream_meta("ghost").unwrap();
    assert!(matches!(ghost.update_existing(|_| Ok(())).await, Err(TierError::Conflict { .. })));
    assert!(ghost.update(|_| Ok(())).await.unwrap().version.is_none(), "Null left alone: nothing written");
    t.stream_meta("clicks")
        .unwrap()
        .update(|v| {
            *v = json!({"shards": 1});
            Ok(())
        })
        .await
        .unwrap();
    t.manifest("logs", "shardId-000000000000").unwrap().claim_epoch(1).await.unwrap();
    assert_eq!(t.list_streams().await.unwrap(), vec!["clicks", "logs", "orders"]);
    orders.delete().await.unwrap();
    orders.delete().await.unwrap();
    assert!(orders.load().await.unwrap().is_none());
    // concurrent updates of one stream's meta all land
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let h = t.stream_meta("clicks").unwrap();
            tokio::spawn(async move {
                h.update_existing(|v| {
                    v[format!("tag{i}")] = json!(i);
                    Ok(())
                })
                .await
                .unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (doc, _) = t.stream_meta("clicks").unwrap().load().await.unwrap().unwrap();
    assert_eq!(doc.version, 7);
    assert_eq!(doc.meta.as_object().unwrap().len(), 7);
}

// --- remote reads ----------------------------------------------------------------

use super::frames::tests::segment as records_segment;

fn small_frames(t: &TierStore) -> TierStore {
    TierStore::with_options(
        t.store().clone(),
        t.prefix().clone(),
        TierOptions { frame_bytes: 4096, ..TierOptions::default() },
    )
}

fn reader(t: &TierStore, budget: u64) -> RemoteReader {
    RemoteReader::new(t.clone(), Arc::new(FrameCache::new(budget, CacheCounters::unregistered())))
}

/// Uploads records `base..base + n` (1,000 data bytes each, timestamps 1000 + i) as one segment.
async fn upload_records(t: &TierStore, base: u64, n: usize, c: Compression) -> (SegmentRef, Bytes) {
    let raw = records_segment(base, &vec![1000; n]);
    let mut req = upload_req(base, base + n as u64, 1000 + n as u64, c, raw.clone());
    req.first_ts_ms = 1000;
    (t.upload_segment(req).await.unwrap().segment, raw)
}

fn request(from: u64, until: u64) -> RemoteReadRequest {
    RemoteReadRequest { from, until, max_records: usize::MAX, max_bytes: usize::MAX, min_timestamp_ms: i64::MIN }
}

async fn remote_ranged_read_of_one_frame(t: TierStore) {
    let t = small_frames(&t);
    let (seg, raw) = upload_records(&t, 500, 100, Compression::Zstd).await;
    let r = reader(&t, 64 << 20);
    let index = r.index(&seg).await.unwrap();
    assert!(index.frames.len() >= 10, "{} frames", index.frames.len());
    let after_index = r.cache().counters.fetched_bytes.get();
    assert_eq!(after_index, seg.stored_bytes.min(64 << 10), "the footer came with one GET of the tail");
    let f = &index.frames[3];
    let frame = r.frame(&seg, &index, 3).await.unwrap();
    let range = index.stored_range(3);
    assert_eq!(r.cache().counters.fetched_bytes.get() - after_index, range.end - range.start, "one ranged GET");
    let offsets: Vec<u64> = crate::log::record::RecordIter::new(frame.clone()).map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets, (f.first_offset..f.first_offset + f.records as u64).collect::<Vec<_>>());
    // Byte-identical to the same records in the segment file.
    let start: usize = index.frames[..3].iter().map(|f| f.raw_len as usize).sum();
    assert_eq!(frame, raw.slice(start..start + f.raw_len as usize));
}

async fn remote_read_across_segments(t: TierStore) {
    let t = small_frames(&t);
    let mut originals = Vec::new();
    for (i, c) in [Compression::Zstd, Compression::Lz4, Compression::None].into_iter().enumerate() {
        let (_, raw) = upload_records(&t, i as u64 * 100, 100, c).await;
        originals.extend(crate::log::record::RecordIter::new(raw).map(|r| r.unwrap()));
    }
    let (m, _) = t.manifest("s", "sh").unwrap().load().await.unwrap().unwrap();
    let r = reader(&t, 64 << 20);
    let all = r.read(&m, request(0, u64::MAX)).await.unwrap();
    assert_eq!(all.records.len(), 300);
    assert_eq!(all.next, u64::MAX);
    for (got, want) in all.records.iter().zip(&originals) {
        assert_eq!((got.offset, got.timestamp_ms, &got.data), (want.offset, want.timestamp_ms, &want.data));
        assert_eq!(got.partition_key.as_bytes(), &want.key[..]);
    }
    // A window in the middle, stopping where the local log would take over.
    let mid = r.read(&m, request(150, 230)).await.unwrap();
    assert_eq!(mid.records.iter().map(|r| r.offset).collect::<Vec<_>>(), (150..230).collect::<Vec<_>>());
    assert_eq!(mid.next, 230);
    // Limits: records, then bytes (at least one record).
    let few = r.read(&m, RemoteReadRequest { max_records: 7, ..request(95, 300) }).await.unwrap();
    assert_eq!((few.records.len(), few.records[0].offset, few.next), (7, 95, 102));
    let one = r.read(&m, RemoteReadRequest { max_bytes: 1, ..request(10, 300) }).await.unwrap();
    assert_eq!((one.records.len(), one.next), (1, 11));
    // Expired records are skipped.
    let fresh = r.read(&m, RemoteReadRequest { min_timestamp_ms: 1050, ..request(0, 100) }).await.unwrap();
    assert_eq!(fresh.records.first().map(|r| r.offset), Some(50));
    // Timestamps: the first record at or after.
    assert_eq!(r.offset_at_timestamp(&m, 1042, 0, 300).await.unwrap(), Some(42));
    assert_eq!(r.offset_at_timestamp(&m, 1042, 150, 300).await.unwrap(), Some(150));
    assert_eq!(r.offset_at_timestamp(&m, 0, 0, 300).await.unwrap(), Some(0));
    assert_eq!(r.offset_at_timestamp(&m, 99_999, 0, 300).await.unwrap(), None);
    assert_eq!(r.offset_at_timestamp(&m, 1042, 0, 40).await.unwrap(), None);
    // Below the first segment, or past the last: nothing, and the read moves on to `until`.
    let past = r.read(&m, request(300, 1000)).await.unwrap();
    assert!(past.records.is_empty());
    assert_eq!(past.next, 1000);
}

async fn remote_cache_accounting_and_bound(t: TierStore) {
    let t = small_frames(&t);
    let (_, _) = upload_records(&t, 0, 200, Compression::Zstd).await;
    let (m, _) = t.manifest("s", "sh").unwrap().load().await.unwrap().unwrap();
    let frames = reader(&t, 1 << 30).index(&m.segments[0]).await.unwrap().frames.len() as u64;

    // Room for everything: the second read is all hits and fetches nothing.
    let big = reader(&t, 64 << 20);
    let c = &big.cache().counters;
    assert_eq!(big.read(&m, request(0, 200)).await.unwrap().records.len(), 200);
    assert_eq!((c.hits.get(), c.misses.get()), (0, frames + 1), "index and every frame missed once");
    let fetched = c.fetched_bytes.get();
    assert!(fetched > 0 && fetched <= m.segments[0].stored_bytes + (64 << 10));
    assert_eq!(big.read(&m, request(0, 200)).await.unwrap().records.len(), 200);
    assert_eq!((c.hits.get(), c.misses.get(), c.fetched_bytes.get()), (frames + 1, frames + 1, fetched));
    assert_eq!(c.evictions.get(), 0);

    // Room for three frames: the budget holds, old frames are evicted, reads stay right.
    let budget = 3 * 4096 + 2 * 1100;
    let small = reader(&t, budget);
    let c = &small.cache().counters;
    for _ in 0..2 {
        let got = small.read(&m, request(0, 200)).await.unwrap();
        assert_eq!(got.records.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..200).collect::<Vec<_>>());
        assert!(small.cache().bytes() <= budget, "{} > {budget}", small.cache().bytes());
    }
    assert!(c.evictions.get() >= frames, "{} evictions", c.evictions.get());
    assert!(c.misses.get() > frames + 1, "a sequential scan larger than the cache misses again");
    assert_eq!(c.bytes.get() as u64, small.cache().bytes());
}

async fn remote_reads_whole_file_objects(t: TierStore) {
    // An object of the earlier format: the segment file as one zstd stream.
    let raw = records_segment(0, &[300; 40]);
    let key = layout::segment_key("s", "sh", 0, 1);
    let stored = codec::compress(&raw, Compression::Zstd, 3).unwrap();
    t.store().put(&t.path(&key), PutPayload::from(stored.clone())).await.unwrap();
    let seg = SegmentRef {
        base_offset: 0,
        end_offset: 40,
        first_ts_ms: 1000,
        last_ts_ms: 1039,
        records: 40,
        raw_bytes: raw.len() as u64,
        stored_bytes: stored.len() as u64,
        compression: Compression::Zstd,
        key,
    };
    t.manifest("s", "sh").unwrap().append_segment(1, seg.clone()).await.unwrap();
    assert_eq!(t.download_segment(&seg).await.unwrap(), raw);
    let (m, _) = t.manifest("s", "sh").unwrap().load().await.unwrap().unwrap();
    let r = reader(&t, 1 << 20);
    let got = r.read(&m, request(5, 40)).await.unwrap();
    assert_eq!(got.records.iter().map(|r| r.offset).collect::<Vec<_>>(), (5..40).collect::<Vec<_>>());
}

async fn remote_fetch_errors_are_transient(t: TierStore) {
    let (seg, _) = upload_records(&t, 0, 10, Compression::Lz4).await;
    let (m, _) = t.manifest("s", "sh").unwrap().load().await.unwrap().unwrap();
    t.store().delete(&t.path(&seg.key)).await.unwrap();
    let e = reader(&t, 1 << 20).read(&m, request(0, 10)).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    // Damage is not transient, and is never returned as records.
    let (seg, _) = upload_records(&t, 10, 10, Compression::None).await;
    let obj = t.store().get(&t.path(&seg.key)).await.unwrap().bytes().await.unwrap();
    let mut bad = obj.to_vec();
    bad[100] ^= 0x40;
    t.store().put(&t.path(&seg.key), PutPayload::from(bad)).await.unwrap();
    let (m, _) = t.manifest("s", "sh").unwrap().load().await.unwrap().unwrap();
    let e = reader(&t, 1 << 20).read(&m, request(10, 20)).await.unwrap_err();
    assert!(matches!(e, TierError::Corrupt { .. }), "{e}");
}

// ---------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random segment files (compressible and not, up to ~330 KiB) come back
    /// byte-identical for every compression, on both backends.
    #[test]
    fn prop_segment_round_trip(
        seed in prop::collection::vec(any::<u8>(), 1..4096),
        reps in 1usize..80,
        tail in prop::collection::vec(any::<u8>(), 0..8192),
    ) {
        let mut bytes = seed.repeat(reps);
        bytes.extend_from_slice(&tail);
        // Cut into records of the seed's length, numbered from 0.
        let mut data = Vec::new();
        for (i, chunk) in bytes.chunks(seed.len()).enumerate() {
            crate::log::record::encode(&mut data, i as u64, i as i64, b"k", chunk);
        }
        let data = Bytes::from(data);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for backend in [memory(), file()] {
                let t = backend.tier.clone();
                for (i, c) in [Compression::Zstd, Compression::Lz4, Compression::None].into_iter().enumerate() {
                    let base = i as u64 * 10;
                    let r = t.upload_segment(upload_req(base, base + 10, 1, c, data.clone())).await.unwrap();
                    prop_assert_eq!(t.download_segment(&r.segment).await.unwrap(), data.clone());
                }
            }
            Ok(())
        })?;
    }
}

#[test]
fn open_store_urls() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/c");
    let (_, prefix) = open_store(&format!("file://{}", nested.display()), &StoreOptions::default()).unwrap();
    assert!(nested.is_dir());
    assert_eq!(prefix, Path::default());

    let opts = StoreOptions {
        endpoint: Some("http://127.0.0.1:9000".into()),
        access_key_id: Some("minio".into()),
        secret_access_key: Some("minio123".into()),
        ..StoreOptions::default()
    };
    let (s3, prefix) = open_store("s3://bucket/some/prefix/", &opts).unwrap();
    assert_eq!(prefix.as_ref(), "some/prefix");
    assert!(s3.to_string().contains("bucket"), "{s3}");
    let (_, prefix) = open_store("s3://bucket", &opts).unwrap();
    assert_eq!(prefix, Path::default());

    let err = |url: &str, opts: &StoreOptions| match open_store(url, opts) {
        Ok(_) => panic!("{url} accepted"),
        Err(e @ TierError::Config { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(url), "{msg}");
            msg
        }
        Err(e) => panic!("{url}: {e}"),
    };
    let none = StoreOptions::default();
    assert!(err("ftp://host/x", &none).contains("unsupported scheme"));
    assert!(err("not a url", &none).contains("not a URL"));
    assert!(err("s3:///prefix", &none).contains("no bucket"));
    assert!(err("file://somehost/dir", &none).contains("host"));
    let half = StoreOptions { access_key_id: Some("k".into()), ..StoreOptions::default() };
    assert!(err("s3://bucket", &half).contains("together"));
    let bad_ep = StoreOptions { endpoint: Some("minio:9000".into()), ..StoreOptions::default() };
    assert!(err("s3://bucket", &bad_ep).contains("endpoint"));
    let f = dir.path().join("plain-file");
    std::fs::write(&f, b"x").unwrap();
    err(&format!("file://{}", f.display()), &none);
}

#[test]
fn names_are_checked() {
    let b = memory();
    assert!(matches!(b.tier.manifest("a/b", "sh"), Err(TierError::InvalidName { .. })));
    assert!(matches!(b.tier.manifest("s", ".."), Err(TierError::InvalidName { .. })));
    assert!(matches!(b.tier.stream_meta(""), Err(TierError::InvalidName { .. })));
    assert!(b.tier.manifest("my-stream_1.x", "shardId-000000000000").is_ok());
}

fn wal_chunk(stream: &str, shard: &str, first: u64, n: usize, salt: u8) -> WalChunk {
    WalChunk {
        stream: stream.into(),
        incarnation: 7,
        shard: shard.into(),
        epoch: 3,
        first_offset: first,
        timestamp_ms: 1_700_000_000_000 + first as i64,
        records: (0..n)
            .map(|i| {
                let data: Vec<u8> = (0..i * 37 % 300).map(|j| (j as u8).wrapping_mul(31) ^ salt ^ i as u8).collect();
                WalRecord { partition_key: format!("key-{i}"), data: data.into() }
            })
            .collect(),
    }
}

/// Write-ahead objects: written create-if-absent under `wal/`, listed oldest first, read
/// back chunk for chunk, deleted (twice is fine); damage is detected, not replayed.
async fn wal_objects_put_list_read_delete(t: TierStore) {
    assert!(t.list_wal().await.unwrap().is_empty(), "no wal/ prefix yet is an empty list");
    let first = vec![wal_chunk("s", "shardId-000000000000", 0, 5, 1), wal_chunk("t", "shardId-000000000001", 40, 3, 2)];
    let second = vec![wal_chunk("s", "shardId-000000000000", 5, 2, 3)];
    let p1 = t.put_wal(wal::encode(&first)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let p2 = t.put_wal(wal::encode(&second)).await.unwrap();
    assert!(p1.as_ref().starts_with(t.path("wal").as_ref()), "{p1}");
    assert_eq!(t.list_wal().await.unwrap(), vec![p1.clone(), p2.clone()]);
    assert_eq!(t.read_wal(&p1).await.unwrap(), first);
    assert_eq!(t.read_all_wal().await.unwrap(), [first.clone(), second.clone()].concat());
    let reach = wal::reach_of(&[first.clone(), second].concat());
    assert_eq!(
        reach.iter().map(|r| (r.stream.as_str(), r.end_offset)).collect::<Vec<_>>(),
        vec![("s", 7), ("t", 43)],
        "the furthest offset per shard"
    );

    // A damaged object is refused by its checksum.
    let mut damaged = wal::encode(&first).to_vec();
    damaged[20] ^= 0x40;
    let bad = t.path("wal/0000000000000-damaged.wal");
    t.store().put(&bad, PutPayload::from(damaged)).await.unwrap();
    let e = t.read_wal(&bad).await.unwrap_err();
    assert!(matches!(e, TierError::Corrupt { .. }), "{e}");
    assert!(t.read_all_wal().await.is_err(), "a damaged object is not skipped silently");
    t.delete_wal(&bad).await.unwrap();

    t.delete_wal(&p1).await.unwrap();
    t.delete_wal(&p1).await.unwrap();
    assert_eq!(t.list_wal().await.unwrap(), vec![p2.clone()]);
    t.delete_wal(&p2).await.unwrap();
    assert!(t.list_wal().await.unwrap().is_empty());
}

/// An object of the first format (no epoch field, as brokers before it wrote) still reads,
/// as epoch 0, so an upgrade in `object` mode replays what the previous version wrote.
#[test]
fn wal_objects_of_the_first_format_read_as_epoch_zero() {
    let chunk = WalChunk { epoch: 0, ..wal_chunk("s", "shardId-000000000000", 9, 3, 4) };
    let mut v1 = b"SFWAL001".to_vec();
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&1u16.to_le_bytes());
    v1.extend_from_slice(b"s");
    v1.extend_from_slice(&7u64.to_le_bytes());
    v1.extend_from_slice(&20u16.to_le_bytes());
    v1.extend_from_slice(b"shardId-000000000000");
    v1.extend_from_slice(&9u64.to_le_bytes());
    v1.extend_from_slice(&chunk.timestamp_ms.to_le_bytes());
    v1.extend_from_slice(&3u32.to_le_bytes());
    for r in &chunk.records {
        v1.extend_from_slice(&(r.partition_key.len() as u16).to_le_bytes());
        v1.extend_from_slice(r.partition_key.as_bytes());
        v1.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        v1.extend_from_slice(&r.data);
    }
    let crc = crc32c::crc32c(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(wal::decode("p", &Bytes::from(v1)).unwrap(), vec![chunk]);
    let mut unknown = wal::encode(&[]).to_vec();
    unknown[7] = b'9';
    assert!(wal::decode("p", &Bytes::from(unknown)).is_err(), "an unknown format is refused");
}

/// Replay across owners: where a superseded owner's chunks reach at or past the first
/// offset a later owner wrote, the later owner's records are the shard's, whatever order
/// the objects were listed in; below it, the earlier owner's records stay.
#[test]
fn replay_keeps_the_later_owners_records_where_owners_overlap() {
    let shard = "shardId-000000000000";
    let at = |epoch, first, n, salt| WalChunk { epoch, ..wal_chunk("s", shard, first, n, salt) };
    // Epoch 1 wrote 0..10 (acknowledged) and, paused and superseded, 10..14 (never
    // acknowledged); epoch 2 continued at 10 and wrote 10..13; epoch 3 took over at 13.
    let chunks = vec![at(2, 10, 3, 20), at(1, 0, 10, 10), at(3, 13, 2, 30), at(1, 10, 4, 11)];
    let replayed = crate::archive::records_past(&chunks, "s", 7, shard, 0);
    let offsets: Vec<u64> = replayed.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..15).collect::<Vec<_>>());
    let expected_data = |epoch_chunk: &WalChunk, offset: u64| {
        epoch_chunk.records[(offset - epoch_chunk.first_offset) as usize].data.clone()
    };
    for r in &replayed {
        let owner = match r.offset {
            0..10 => &chunks[1],
            10..13 => &chunks[0],
            _ => &chunks[2],
        };
        assert_eq!(r.data, expected_data(owner, r.offset), "offset {}", r.offset);
    }
    // Objects listed in another order give the same records.
    let reversed: Vec<WalChunk> = chunks.iter().rev().cloned().collect();
    assert_eq!(crate::archive::records_past(&reversed, "s", 7, shard, 0), replayed);
    // Only past `from`, only this shard and incarnation.
    assert_eq!(crate::archive::records_past(&chunks, "s", 7, shard, 12).len(), 3);
    assert!(crate::archive::records_past(&chunks, "s", 8, shard, 0).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any chunks encode and decode to themselves; any truncation is refused.
    #[test]
    fn prop_wal_codec_round_trip(
        chunks in prop::collection::vec(
            (
                "[a-z0-9_.-]{1,20}", any::<u64>(), "shardId-[0-9]{12}", any::<u64>(), 0u64..1 << 40, any::<i64>(),
                prop::collection::vec((".{0,12}", prop::collection::vec(any::<u8>(), 0..200)), 0..20),
            ),
            0..6,
        ),
        cut in any::<prop::sample::Index>(),
    ) {
        let chunks: Vec<WalChunk> = chunks
            .into_iter()
            .map(|(stream, incarnation, shard, epoch, first_offset, timestamp_ms, records)| WalChunk {
                stream, incarnation, shard, epoch, first_offset, timestamp_ms,
                records: records.into_iter().map(|(k, d)| WalRecord { partition_key: k, data: d.into() }).collect(),
            })
            .collect();
        let bytes = wal::encode(&chunks);
        prop_assert_eq!(wal::decode("p", &bytes).unwrap(), chunks);
        let cut = cut.index(bytes.len());
        prop_assert!(wal::decode("p", &bytes.slice(..cut)).is_err());
    }
}

/// Brokers starting together each offer a key: one is stored, and every one of them gets it.
async fn cluster_token_key_one_winner(t: TierStore) {
    let offers = (0..8u8).map(|i| {
        let t = t.clone();
        tokio::spawn(async move { t.cluster_token_key([i; 32]).await.unwrap() })
    });
    let keys: Vec<[u8; 32]> = futures::future::join_all(offers).await.into_iter().map(|k| k.unwrap()).collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "one key for all");
    assert_eq!(t.cluster_token_key([99; 32]).await.unwrap(), keys[0], "a later broker reads it");
}
