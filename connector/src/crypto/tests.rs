use std::fs::{self, OpenOptions};

use aead_stream::aead::Buffer as _;

use super::cipher::{count_with, range_with};
use super::files::{direct_io_fits, open_direct};
use super::*;
use proptest::prelude::*;
use std::io::Write;

const SMALL: usize = 64;

fn key() -> DataKey {
    DataKey::generate().unwrap()
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    getrandom::fill(&mut v).unwrap();
    v
}

/// Seals `data` from a file and writes it back through a `SegmentWriter`,
/// as the two ends of a transfer would.
fn round_trip(data: &[u8], segment_size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    let out = dir.path().join("out.bin");
    fs::write(&src, data).unwrap();
    let k = key();
    let sender = SegmentCipher::with_segment_size(&k, "agr-1", 3, segment_size);
    let receiver = SegmentCipher::with_segment_size(&k, "agr-1", 3, segment_size);
    let reader = SealedReader::open(&src, sender, 0).unwrap();
    let count = reader.segment_count();
    assert_eq!(count, count_with(data.len() as u64, segment_size).unwrap());
    let mut writer = SegmentWriter::create_sized(&out, segment_size).unwrap();
    let mut seen = 0;
    for seg in reader {
        let seg = seg.unwrap();
        assert!(seg.ciphertext.len() <= segment_size + TAG_SIZE);
        assert_eq!(seg.last, seg.index + 1 == count);
        let plain = receiver.open(seg.index, seg.last, &seg.ciphertext).unwrap();
        writer.write_segment(seg.index, seg.last, &plain).unwrap();
        seen += 1;
    }
    assert_eq!(seen, count);
    assert!(!out.exists(), "nothing at <out> before finish");
    let done = writer.finish(&blake3::hash(data)).unwrap();
    assert_eq!(done, out);
    assert_eq!(fs::read(&out).unwrap(), data);
    assert!(!part_path(&out).exists());
}

#[test]
fn round_trip_sizes_small_segments() {
    let s = SMALL;
    for size in [0, 1, s - 1, s, s + 1, 3 * s + 5] {
        round_trip(&random_bytes(size), s);
    }
}

#[test]
fn round_trip_sizes_real_segment_size() {
    let s = SEGMENT_SIZE;
    for size in [0, 1, s - 1, s, s + 1, 3 * s + 5] {
        round_trip(&random_bytes(size), s);
    }
}

#[test]
fn segment_buffers_are_aligned_and_never_grow() {
    let mut buf = SegmentBuf::new();
    assert_eq!(buf.capacity(), SEGMENT_SIZE + TAG_SIZE);
    assert!(buf.fill(SEGMENT_SIZE + TAG_SIZE + 1).is_none());
    let full = buf.fill(SEGMENT_SIZE).unwrap();
    assert_eq!(full.len(), SEGMENT_SIZE);
    assert!(direct_io_fits(buf.as_ref()), "a full segment is aligned");
    assert!(!direct_io_fits(&buf.as_ref()[1..]));
    assert!(!direct_io_fits(&buf.as_ref()[..SEGMENT_SIZE - 1]));
    // The AEAD appends its tag within the capacity, and no further.
    buf.extend_from_slice(&[0; TAG_SIZE]).unwrap();
    assert!(buf.extend_from_slice(&[0]).is_err());
    assert_eq!(buf.as_ref().len(), SEGMENT_SIZE + TAG_SIZE);
    buf.truncate(3);
    assert_eq!(buf.as_ref().len(), 3);

    // Sealing into a buffer too small for the tag fails cleanly.
    let k = key();
    let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
    let mut tight = SegmentBuf::with_capacity(SMALL);
    tight.fill(SMALL).unwrap();
    assert!(c.seal_in_place(0, true, &mut tight).is_err());
}

/// Full-size segments through reused buffers, as a release moves them:
/// the full ones go to disk directly where the file system allows it,
/// the short last one through the page cache, and a resume in between
/// continues the same file.
fn direct_round_trip(dir: &Path) -> bool {
    // Whether this file system takes O_DIRECT at all, asked apart from
    // the writer.
    let probe = dir.join("probe");
    fs::write(&probe, b"").unwrap();
    let supported = open_direct(&probe).is_some();
    let data = random_bytes(3 * SEGMENT_SIZE + 4321);
    let (src, out) = (dir.join("src.bin"), dir.join("out.bin"));
    fs::write(&src, &data).unwrap();
    let k = key();
    let receiver = SegmentCipher::new(&k, "agr-1", 3);
    let mut reader = SealedReader::open(&src, SegmentCipher::new(&k, "agr-1", 3), 0).unwrap();
    let mut buf = SegmentBuf::new();
    let mut writer = SegmentWriter::create(&out).unwrap();
    let direct = writer.direct_io();
    assert_eq!(direct, supported, "{}", dir.display());
    for _ in 0..2 {
        let (index, last) = reader.next_into(&mut buf).unwrap().unwrap();
        receiver.open_in_place(index, last, &mut buf).unwrap();
        writer.write_segment(index, last, buf.as_ref()).unwrap();
    }
    assert_eq!(
        writer.direct_io(),
        direct,
        "aligned writes were not refused"
    );
    // Both full segments went past the page cache, or, without direct
    // I/O here, none did and the writer says so.
    assert_eq!(writer.direct_writes(), if direct { 2 } else { 0 });
    drop(writer);

    let (mut writer, next) = SegmentWriter::resume(&out).unwrap();
    assert_eq!(next, 2);
    let mut reader = SealedReader::open(&src, SegmentCipher::new(&k, "agr-1", 3), next).unwrap();
    while let Some(item) = reader.next_into(&mut buf) {
        let (index, last) = item.unwrap();
        receiver.open_in_place(index, last, &mut buf).unwrap();
        writer.write_segment(index, last, buf.as_ref()).unwrap();
    }
    assert_eq!(writer.direct_io(), direct);
    // The third segment is full and goes directly; the short last one
    // is buffered.
    assert_eq!(writer.direct_writes(), if direct { 1 } else { 0 });
    writer.finish(&blake3::hash(&data)).unwrap();
    assert_eq!(fs::read(&out).unwrap(), data);
    if !direct {
        println!(
            "{}: no direct I/O on this file system; buffered writes checked",
            dir.display()
        );
    }
    direct
}

#[test]
fn full_segments_go_to_disk_directly_and_resume() {
    // The system's temporary directory, and the build's own directory,
    // on the disk the sources are on whatever /tmp is.
    let mut direct = direct_round_trip(tempfile::tempdir().unwrap().path());
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    if target.is_dir() {
        direct |= direct_round_trip(tempfile::tempdir_in(&target).unwrap().path());
    }
    // tmpfs refuses O_DIRECT on older kernels: the buffered path then.
    if Path::new("/dev/shm").is_dir() {
        direct |= direct_round_trip(tempfile::tempdir_in("/dev/shm").unwrap().path());
    }
    if cfg!(target_os = "linux") && !direct {
        let reason = "no directory here takes direct I/O; only the buffered path was checked";
        assert!(
            !std::env::var("BAYSPACE_REQUIRE_ALL").is_ok_and(|v| v == "1"),
            "BAYSPACE_REQUIRE_ALL=1, but {reason}"
        );
        println!("skipped: {reason}");
    }
}

/// Writes `data` through a sealed writer, as a node keeping received
/// data sealed does, stopping after `stop_after` segments if given.
fn write_sealed(data: &[u8], k: &DataKey, out: &Path, stop_after: Option<u32>) -> Option<PathBuf> {
    let cipher = SegmentCipher::with_segment_size(k, "agr-1", 3, SMALL);
    let (mut w, next) = SegmentWriter::resume_sealed(out, cipher).unwrap();
    let count = count_with(data.len() as u64, SMALL).unwrap();
    for i in next..count {
        if stop_after == Some(i) {
            return None;
        }
        let (off, len) = range_with(i, data.len() as u64, SMALL).unwrap();
        let off = off as usize;
        w.write_segment(i, i + 1 == count, &data[off..off + len])
            .unwrap();
    }
    Some(w.finish(&blake3::hash(data)).unwrap())
}

fn unseal(
    data_len: usize,
    k: &DataKey,
    sealed: &Path,
    hash: &blake3::Hash,
    out: &Path,
) -> Result<PathBuf> {
    let cipher = SegmentCipher::with_segment_size(k, "agr-1", 3, SMALL);
    unseal_file(sealed, &cipher, data_len as u64, hash, out)
}

#[test]
fn sealed_storage_round_trips_every_size_and_holds_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    for size in [0, 1, SMALL - 1, SMALL, SMALL + 1, 3 * SMALL, 3 * SMALL + 5] {
        let data = random_bytes(size);
        let k = key();
        let sealed = dir.path().join(format!("{size}.sealed"));
        write_sealed(&data, &k, &sealed, None).unwrap();
        let count = count_with(size as u64, SMALL).unwrap() as usize;
        let stored = fs::read(&sealed).unwrap();
        assert_eq!(stored.len(), size + count * TAG_SIZE);
        if size >= 16 {
            assert!(!stored.windows(16).any(|w| w == &data[..16]));
        }
        let out = dir.path().join(format!("{size}.out"));
        unseal(size, &k, &sealed, &blake3::hash(&data), &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), data);
        // Another key (a shredded and re-issued one, say) opens nothing.
        let other = dir.path().join(format!("{size}.other"));
        let e = unseal(size, &key(), &sealed, &blake3::hash(&data), &other).unwrap_err();
        assert!(matches!(e, CryptoError::Segment { index: 0 }), "{e}");
        assert!(!other.exists() && !part_path(&other).exists());
    }
}

#[test]
fn sealed_storage_resumes_after_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(5 * SMALL + 7);
    let k = key();
    let sealed = dir.path().join("d.sealed");
    assert!(write_sealed(&data, &k, &sealed, Some(3)).is_none());
    // A crash in the middle of record 3.
    let part = part_path(&sealed);
    let mut f = OpenOptions::new().append(true).open(&part).unwrap();
    f.write_all(&[7u8; 20]).unwrap();
    drop(f);
    let cipher = SegmentCipher::with_segment_size(&k, "agr-1", 3, SMALL);
    let (_, next) = SegmentWriter::resume_sealed(&sealed, cipher).unwrap();
    assert_eq!(next, 3);
    write_sealed(&data, &k, &sealed, None).unwrap();
    let out = dir.path().join("d.out");
    unseal(data.len(), &k, &sealed, &blake3::hash(&data), &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), data);
}

#[test]
fn sealed_storage_resume_drops_a_record_damaged_at_rest_and_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(4 * SMALL);
    let k = key();
    let sealed = dir.path().join("d.sealed");
    assert!(write_sealed(&data, &k, &sealed, Some(3)).is_none());
    let part = part_path(&sealed);
    let mut bytes = fs::read(&part).unwrap();
    bytes[(SMALL + TAG_SIZE) + 5] ^= 1;
    fs::write(&part, &bytes).unwrap();
    let cipher = SegmentCipher::with_segment_size(&k, "agr-1", 3, SMALL);
    let (_, next) = SegmentWriter::resume_sealed(&sealed, cipher).unwrap();
    assert_eq!(next, 1, "record 1 is damaged, so it is fetched again");
    write_sealed(&data, &k, &sealed, None).unwrap();
    let out = dir.path().join("d.out");
    unseal(data.len(), &k, &sealed, &blake3::hash(&data), &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), data);
}

#[test]
fn sealed_storage_resume_recognises_a_full_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(2 * SMALL);
    let k = key();
    let sealed = dir.path().join("d.sealed");
    // Every record written, then a crash before the rename.
    let cipher = SegmentCipher::with_segment_size(&k, "agr-1", 3, SMALL);
    let (mut w, _) = SegmentWriter::resume_sealed(&sealed, cipher).unwrap();
    w.write_segment(0, false, &data[..SMALL]).unwrap();
    w.write_segment(1, true, &data[SMALL..]).unwrap();
    drop(w);
    let cipher = SegmentCipher::with_segment_size(&k, "agr-1", 3, SMALL);
    let (w, next) = SegmentWriter::resume_sealed(&sealed, cipher).unwrap();
    assert_eq!(next, 2);
    w.finish(&blake3::hash(&data)).unwrap();
}

#[test]
fn a_flipped_bit_at_rest_in_sealed_data_names_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3 * SMALL + 1);
    let k = key();
    let sealed = dir.path().join("d.sealed");
    write_sealed(&data, &k, &sealed, None).unwrap();
    let mut bytes = fs::read(&sealed).unwrap();
    bytes[2 * (SMALL + TAG_SIZE) + 9] ^= 0x40;
    fs::write(&sealed, &bytes).unwrap();
    let out = dir.path().join("d.out");
    let e = unseal(data.len(), &k, &sealed, &blake3::hash(&data), &out).unwrap_err();
    assert!(matches!(e, CryptoError::Segment { index: 2 }), "{e}");
    assert!(e.to_string().contains("segment 2"), "{e}");
    assert!(!out.exists() && !part_path(&out).exists());
    // Truncation is caught before any decryption.
    fs::write(&sealed, &bytes[..bytes.len() - 1]).unwrap();
    let e = unseal(data.len(), &k, &sealed, &blake3::hash(&data), &out).unwrap_err();
    assert!(matches!(e, CryptoError::SealedLength { .. }), "{e}");
}

fn seal_all(cipher: &SegmentCipher, data: &[u8]) -> Vec<SealedSegment> {
    let s = cipher.segment_size();
    let count = count_with(data.len() as u64, s).unwrap();
    (0..count)
        .map(|i| {
            let (off, len) = range_with(i, data.len() as u64, s).unwrap();
            let off = off as usize;
            let last = i + 1 == count;
            SealedSegment {
                index: i,
                last,
                ciphertext: cipher.seal(i, last, &data[off..off + len]).unwrap(),
            }
        })
        .collect()
}

#[test]
fn flipped_bit_in_any_segment_is_detected_and_named() {
    let k = key();
    let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
    let data = random_bytes(3 * SMALL + 5);
    let segs = seal_all(&c, &data);
    assert_eq!(segs.len(), 4);
    for (n, seg) in segs.iter().enumerate() {
        // Every byte, ciphertext and tag alike, is covered.
        for pos in [0, seg.ciphertext.len() / 2, seg.ciphertext.len() - 1] {
            let mut bad = seg.ciphertext.clone();
            bad[pos] ^= 1 << (n % 8);
            let err = c.open(seg.index, seg.last, &bad).unwrap_err();
            assert!(
                matches!(err, CryptoError::Segment { index } if index == seg.index),
                "{err}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("segment {} failed authentication", seg.index))
            );
        }
        assert!(c.open(seg.index, seg.last, &seg.ciphertext).is_ok());
    }
}

#[test]
fn swapped_segments_fail() {
    let k = key();
    let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
    let segs = seal_all(&c, &random_bytes(3 * SMALL));
    let err = c.open(0, false, &segs[1].ciphertext).unwrap_err();
    assert!(matches!(err, CryptoError::Segment { index: 0 }));
    let err = c.open(1, false, &segs[0].ciphertext).unwrap_err();
    assert!(matches!(err, CryptoError::Segment { index: 1 }));
}

#[test]
fn segments_from_another_agreement_or_version_fail() {
    let k = key();
    let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
    let seg = c.seal(2, false, &random_bytes(SMALL)).unwrap();
    for other in [
        SegmentCipher::with_segment_size(&k, "agr-2", 1, SMALL),
        SegmentCipher::with_segment_size(&k, "agr-1", 2, SMALL),
        SegmentCipher::with_segment_size(&key(), "agr-1", 1, SMALL),
    ] {
        let err = other.open(2, false, &seg).unwrap_err();
        assert!(matches!(err, CryptoError::Segment { index: 2 }));
    }
    assert!(c.open(2, false, &seg).is_ok());
}

#[test]
fn truncated_stream_fails() {
    let k = key();
    let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
    let segs = seal_all(&c, &random_bytes(2 * SMALL + 1));
    // The real last segment cannot pass as an inner one ...
    let err = c.open(2, false, &segs[2].ciphertext).unwrap_err();
    assert!(matches!(err, CryptoError::Segment { index: 2 }));
    // ... and a stream cut after segment 1 cannot end there.
    let err = c.open(1, true, &segs[1].ciphertext).unwrap_err();
    assert!(matches!(err, CryptoError::Segment { index: 1 }));
    // Chopping the tag off is not a way round it either.
    let err = c.open(2, true, &segs[2].ciphertext[..10]).unwrap_err();
    assert!(matches!(err, CryptoError::Segment { index: 2 }));
}

#[test]
fn oversized_segments_are_refused() {
    let c = SegmentCipher::with_segment_size(&key(), "agr-1", 1, SMALL);
    let err = c.seal(4, true, &[0; SMALL + 1]).unwrap_err();
    assert!(matches!(
        err,
        CryptoError::SegmentTooLong { index: 4, len, max: SMALL } if len == SMALL + 1
    ));
    let err = c.open(4, true, &[0; SMALL + TAG_SIZE + 1]).unwrap_err();
    assert!(matches!(err, CryptoError::SegmentTooLong { index: 4, .. }));
}

#[test]
fn plan_helpers() {
    let s = SEGMENT_SIZE as u64;
    assert_eq!(segment_count(0).unwrap(), 1);
    assert_eq!(segment_count(1).unwrap(), 1);
    assert_eq!(segment_count(s).unwrap(), 1);
    assert_eq!(segment_count(s + 1).unwrap(), 2);
    assert_eq!(segment_count(u64::from(u32::MAX) * s).unwrap(), u32::MAX);
    assert!(matches!(
        segment_count(u64::from(u32::MAX) * s + 1),
        Err(CryptoError::TooLarge { .. })
    ));
    assert!(matches!(
        segment_count(u64::MAX),
        Err(CryptoError::TooLarge { size: u64::MAX })
    ));
    assert_eq!(segment_range(0, 0).unwrap(), (0, 0));
    assert_eq!(segment_range(0, 5).unwrap(), (0, 5));
    assert_eq!(segment_range(1, 3 * s + 5).unwrap(), (s, SEGMENT_SIZE));
    assert_eq!(segment_range(3, 3 * s + 5).unwrap(), (3 * s, 5));
    assert!(matches!(
        segment_range(4, 3 * s + 5),
        Err(CryptoError::IndexOutOfRange { index: 4, count: 4 })
    ));
}

#[test]
fn sealed_reader_starts_at_any_segment() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    let data = random_bytes(3 * SMALL + 5);
    fs::write(&src, &data).unwrap();
    let k = key();
    let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
    let all = seal_all(&c, &data);
    let reader = SealedReader::open(&src, c, 2).unwrap();
    let tail: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(tail, all[2..]);
    let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
    assert_eq!(SealedReader::open(&src, c, 4).unwrap().count(), 0);
    let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
    assert!(matches!(
        SealedReader::open(&src, c, 5),
        Err(CryptoError::IndexOutOfRange { index: 5, count: 4 })
    ));
}

#[test]
fn resume_continues_at_the_right_segment() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    let out = dir.path().join("out.bin");
    let data = random_bytes(9 * SMALL + 7);
    fs::write(&src, &data).unwrap();

    // First attempt: five segments arrive, then the connection drops.
    let k1 = key();
    let c1 = SegmentCipher::with_segment_size(&k1, "agr-1", 1, SMALL);
    let r1 = SegmentCipher::with_segment_size(&k1, "agr-1", 1, SMALL);
    let mut writer = SegmentWriter::create_sized(&out, SMALL).unwrap();
    for seg in SealedReader::open(&src, c1, 0).unwrap().take(5) {
        let seg = seg.unwrap();
        let plain = r1.open(seg.index, seg.last, &seg.ciphertext).unwrap();
        writer.write_segment(seg.index, seg.last, &plain).unwrap();
    }
    drop(writer);
    // A crash mid-write left part of a sixth segment behind.
    let mut f = OpenOptions::new()
        .append(true)
        .open(part_path(&out))
        .unwrap();
    f.write_all(&data[5 * SMALL..5 * SMALL + 10]).unwrap();
    drop(f);
    assert!(!out.exists());

    // Second attempt under a fresh key, as the transfer code must do.
    let (mut writer, next) = SegmentWriter::resume_sized(&out, SMALL).unwrap();
    assert_eq!(next, 5);
    assert_eq!(writer.next_index(), 5);
    assert_eq!(
        fs::metadata(part_path(&out)).unwrap().len(),
        5 * SMALL as u64
    );
    let k2 = key();
    let c2 = SegmentCipher::with_segment_size(&k2, "agr-1", 1, SMALL);
    let r2 = SegmentCipher::with_segment_size(&k2, "agr-1", 1, SMALL);
    for seg in SealedReader::open(&src, c2, next).unwrap() {
        let seg = seg.unwrap();
        let plain = r2.open(seg.index, seg.last, &seg.ciphertext).unwrap();
        writer.write_segment(seg.index, seg.last, &plain).unwrap();
    }
    writer.finish(&blake3::hash(&data)).unwrap();
    assert_eq!(blake3::hash(&fs::read(&out).unwrap()), blake3::hash(&data));
}

#[test]
fn resume_without_a_part_file_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let (mut writer, next) = SegmentWriter::resume_sized(&out, SMALL).unwrap();
    assert_eq!(next, 0);
    writer.write_segment(0, true, b"abc").unwrap();
    writer.finish(&blake3::hash(b"abc")).unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"abc");
}

#[test]
fn resume_rehashes_what_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let data = random_bytes(2 * SMALL);
    let mut writer = SegmentWriter::create_sized(&out, SMALL).unwrap();
    writer.write_segment(0, false, &data[..SMALL]).unwrap();
    drop(writer);
    // The .part file is altered at rest between attempts.
    let mut on_disk = fs::read(part_path(&out)).unwrap();
    on_disk[3] ^= 0x10;
    fs::write(part_path(&out), &on_disk).unwrap();
    let (mut writer, next) = SegmentWriter::resume_sized(&out, SMALL).unwrap();
    assert_eq!(next, 1);
    writer.write_segment(1, true, &data[SMALL..]).unwrap();
    let err = writer.finish(&blake3::hash(&data)).unwrap_err();
    assert!(matches!(err, CryptoError::HashMismatch { .. }));
    assert!(!out.exists());
}

#[test]
fn finish_with_the_wrong_hash_leaves_nothing_at_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let mut writer = SegmentWriter::create_sized(&out, SMALL).unwrap();
    writer.write_segment(0, true, b"hello").unwrap();
    let wrong = blake3::hash(b"hellO");
    let err = writer.finish(&wrong).unwrap_err();
    match &err {
        CryptoError::HashMismatch {
            expected,
            actual,
            out: o,
        } => {
            assert_eq!(*expected, wrong);
            assert_eq!(*actual, blake3::hash(b"hello"));
            assert_eq!(o, &out);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("nothing was written to"));
    assert!(!out.exists());
    assert!(!part_path(&out).exists());
}

#[test]
fn writer_refuses_out_of_order_short_and_trailing_segments() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let mut w = SegmentWriter::create_sized(&out, SMALL).unwrap();
    assert!(matches!(
        w.write_segment(1, false, &[0; SMALL]),
        Err(CryptoError::OutOfOrder {
            index: 1,
            expected: 0
        })
    ));
    assert!(matches!(
        w.write_segment(0, false, &[0; SMALL - 1]),
        Err(CryptoError::ShortSegment { index: 0, .. })
    ));
    assert!(matches!(
        w.write_segment(0, true, &[0; SMALL + 1]),
        Err(CryptoError::SegmentTooLong { index: 0, .. })
    ));
    w.write_segment(0, false, &[0; SMALL]).unwrap();
    w.write_segment(1, true, &[1; 3]).unwrap();
    assert!(matches!(
        w.write_segment(2, true, &[]),
        Err(CryptoError::AfterLast { index: 2 })
    ));
}

#[test]
fn wrap_unwrap_round_trip() {
    let k = key();
    let storage = storage_key_from_seed(&[7; 32]);
    let wrapped = WrappedKey::wrap(&k, &storage, "agr-1").unwrap();
    let back = wrapped.unwrap(&storage, "agr-1").unwrap();
    assert_eq!(back.as_bytes(), k.as_bytes());

    // It survives storage as JSON.
    let json = serde_json::to_string(&wrapped).unwrap();
    let parsed: WrappedKey = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, wrapped);
    assert_eq!(
        parsed.unwrap(&storage, "agr-1").unwrap().as_bytes(),
        k.as_bytes()
    );
    // Two wraps of one key differ (random nonce).
    assert_ne!(WrappedKey::wrap(&k, &storage, "agr-1").unwrap(), wrapped);
}

#[test]
fn unwrap_with_wrong_context_or_storage_key_fails() {
    let k = key();
    let storage = storage_key_from_seed(&[7; 32]);
    let wrapped = WrappedKey::wrap(&k, &storage, "agr-1").unwrap();
    let err = wrapped.unwrap(&storage, "agr-2").unwrap_err();
    assert!(matches!(&err, CryptoError::Unwrap { context } if context == "agr-2"));
    let other = storage_key_from_seed(&[8; 32]);
    assert!(matches!(
        wrapped.unwrap(&other, "agr-1"),
        Err(CryptoError::Unwrap { .. })
    ));
    let mut altered = wrapped.clone();
    altered.sealed[0] ^= 1;
    assert!(altered.unwrap(&storage, "agr-1").is_err());
}

#[test]
fn storage_key_is_derived_not_the_seed() {
    let seed = [7; 32];
    let a = storage_key_from_seed(&seed);
    assert_ne!(a, seed);
    assert_eq!(a, storage_key_from_seed(&seed));
    assert_ne!(a, storage_key_from_seed(&[8; 32]));
}

#[test]
fn data_key_debug_hides_the_key() {
    let k = DataKey::from_bytes([0xab; 32]);
    let shown = format!("{k:?} {k:#?}");
    assert!(!shown.contains("ab"), "{shown}");
    assert!(!shown.contains("171"), "{shown}");
    assert!(shown.contains("redacted"));
    let k = key();
    let hex: String = k.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let shown = format!("{k:?}");
    assert!(!shown.contains(&hex[..8]));
    assert!(!shown.contains(&format!("{:?}", k.as_bytes())));
}

#[test]
fn generated_keys_differ() {
    assert_ne!(key().as_bytes(), key().as_bytes());
}

#[test]
fn ciphertext_is_deterministic_per_key_and_binding() {
    // Resume with the same key would resend identical ciphertext; a fresh
    // key per attempt changes it.
    let k = key();
    let c = SegmentCipher::with_segment_size(&k, "agr-1", 1, SMALL);
    let p = random_bytes(SMALL);
    assert_eq!(c.seal(0, false, &p).unwrap(), c.seal(0, false, &p).unwrap());
    let c2 = SegmentCipher::with_segment_size(&key(), "agr-1", 1, SMALL);
    assert_ne!(
        c.seal(0, false, &p).unwrap(),
        c2.seal(0, false, &p).unwrap()
    );
    assert_ne!(c.seal(0, false, &p).unwrap(), c.seal(1, false, &p).unwrap());
    assert_ne!(c.seal(0, false, &p).unwrap(), c.seal(0, true, &p).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn seal_open_round_trip(
        len in 0usize..=4096,
        index in any::<u32>(),
        last in any::<bool>(),
        seed in any::<[u8; 32]>(),
        version in any::<u64>(),
    ) {
        let k = DataKey::from_bytes(seed);
        let c = SegmentCipher::with_segment_size(&k, "agr-p", version, 4096);
        let plain: Vec<u8> = (0..len).map(|i| (i as u8) ^ seed[i % 32]).collect();
        let sealed = c.seal(index, last, &plain).unwrap();
        prop_assert_eq!(sealed.len(), len + TAG_SIZE);
        prop_assert_eq!(c.open(index, last, &sealed).unwrap(), plain);
        prop_assert!(c.open(index, !last, &sealed).is_err());
        prop_assert!(c.open(index.wrapping_add(1), last, &sealed).is_err());
    }
}
