//! The reader and checker on corrupted, truncated and hostile images: errors, never panics.

mod common;

use std::io::Cursor;
use std::sync::OnceLock;

use iso9660_writer::md5sum::check_reader;
use iso9660_writer::{EntryKind, IsoReader, Namespace};
use proptest::prelude::*;

/// A small valid image (Rock Ridge with CE areas, Joliet, symlinks, hard links), built once.
fn image() -> &'static Vec<u8> {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        common::make_tree(&src);
        // Keep the image small so each case runs fast: drop the big blobs.
        std::fs::remove_dir_all(src.join("images")).unwrap();
        std::fs::remove_file(src.join("links/copy.bin")).unwrap();
        let iso = dir.path().join("h.iso");
        common::master_to(&src, &iso, true);
        std::fs::read(iso).unwrap()
    })
}

/// Exercises every reader entry point; any result is fine, a panic is not.
fn exercise(bytes: Vec<u8>) {
    let _ = check_reader(&mut Cursor::new(bytes.clone()));
    let Ok(mut r) = IsoReader::open(Cursor::new(bytes)) else {
        return;
    };
    let _ = r.volume_id();
    for ns in [Namespace::RockRidge, Namespace::Joliet, Namespace::Plain] {
        if let Ok(entries) = r.walk_namespace(ns) {
            for e in entries.iter().take(64) {
                if e.kind == EntryKind::File {
                    let _ = r.read_to_vec(e, 1 << 20);
                }
            }
        }
    }
}

#[test]
fn the_valid_image_reads() {
    let mut r = IsoReader::open(Cursor::new(image().clone())).unwrap();
    let n = r.walk().unwrap().len();
    assert!(n > 20);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Random bytes overwritten in the metadata area (descriptors, path tables, directories,
    /// continuation areas).
    #[test]
    fn corrupted_metadata_never_panics(
        edits in prop::collection::vec((16usize * 2048..48 * 2048, any::<u8>()), 1..24)
    ) {
        let mut img = image().clone();
        for (at, v) in edits {
            if at < img.len() {
                img[at] = v;
            }
        }
        exercise(img);
    }

    /// Directory-record fields set to extreme values (extent LBAs and lengths, record lengths,
    /// identifier lengths, SUSP entry lengths).
    #[test]
    fn extreme_field_values_never_panic(
        at in 16usize * 2048..48 * 2048,
        width in prop::sample::select(vec![1usize, 2, 4, 8]),
        v in prop::sample::select(vec![0u64, 1, 0x7f, 0xff, 0xffff, 0xffff_ffff, u64::MAX, 34, 255, 2048]),
    ) {
        let mut img = image().clone();
        let bytes = v.to_le_bytes();
        for i in 0..width {
            if at + i < img.len() {
                img[at + i] = bytes[i];
            }
        }
        exercise(img);
    }

    /// Truncated images.
    #[test]
    fn truncated_images_never_panic(len in 0usize..200 * 2048) {
        let img = image();
        let len = len.min(img.len());
        exercise(img[..len].to_vec());
    }

    /// Pure garbage with a plausible volume-descriptor header.
    #[test]
    fn garbage_never_panics(body in prop::collection::vec(any::<u8>(), 0..40 * 2048), t in 0u8..4) {
        let mut img = vec![0u8; 16 * 2048];
        img.extend_from_slice(&body);
        if img.len() > 16 * 2048 + 7 {
            img[16 * 2048] = if t == 3 { 255 } else { t };
            img[16 * 2048 + 1..16 * 2048 + 6].copy_from_slice(b"CD001");
        }
        exercise(img);
    }
}

#[test]
fn directory_loop_is_an_error() {
    // Point a subdirectory record back to the root extent.
    let img = image().clone();
    let mut r = IsoReader::open(Cursor::new(img.clone())).unwrap();
    let entries = r.walk_namespace(Namespace::Plain).unwrap();
    let sub = entries.iter().find(|e| e.kind == EntryKind::Dir).unwrap();
    let sub_lba = sub.extents[0].lba;
    let root_lba = u32::from_le_bytes(img[16 * 2048 + 158..16 * 2048 + 162].try_into().unwrap());
    // Find the record naming `sub` in the root directory and redirect it.
    let root_off = root_lba as usize * 2048;
    let mut patched = img.clone();
    let mut off = root_off;
    let mut done = false;
    while off < root_off + 2048 {
        let len = patched[off] as usize;
        if len == 0 {
            break;
        }
        let lba = u32::from_le_bytes(patched[off + 2..off + 6].try_into().unwrap());
        if lba == sub_lba {
            patched[off + 2..off + 6].copy_from_slice(&root_lba.to_le_bytes());
            patched[off + 6..off + 10].copy_from_slice(&root_lba.to_be_bytes());
            done = true;
            break;
        }
        off += len;
    }
    assert!(done);
    let mut r = IsoReader::open(Cursor::new(patched)).unwrap();
    let err = r.walk().unwrap_err().to_string();
    assert!(err.contains("loop"), "{err}");
}
