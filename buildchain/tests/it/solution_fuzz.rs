//! The path from bytes to findings never panics: a valid Solution ISO is mutated (bytes
//! overwritten in the metadata area or anywhere, sectors replaced, truncated) and validated.

use crate::solution_common;

use std::io::Cursor;
use std::sync::OnceLock;

use buildchain::solution::validate::validate_iso;
use proptest::prelude::*;
use solution_common::*;

fn valid_iso() -> &'static Vec<u8> {
    static ISO: OnceLock<Vec<u8>> = OnceLock::new();
    ISO.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tree(tmp.path(), "1.0.0");
        // A symlink and a nested directory give the reader more record kinds to chew on.
        std::os::unix::fs::symlink("../manifest.yaml", root.join("operator/link")).unwrap();
        let iso = tmp.path().join("x.iso");
        master_ours(&root, &iso, "Example Solution 1.0.0");
        let b = std::fs::read(&iso).unwrap();
        let r = validate_iso(Cursor::new(b.clone()), "x.iso");
        assert_eq!(r.errors(), 0, "{}", r.to_text());
        b
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite bytes at offsets in the first 128 KiB (descriptors, path tables, directories).
    Meta(Vec<(usize, u8)>),
    /// Overwrite bytes anywhere.
    Anywhere(Vec<(usize, u8)>),
    /// Replace a whole sector with a repeated byte.
    Sector(usize, u8),
    /// Truncate.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => prop::collection::vec((0usize..128 * 1024, any::<u8>()), 1..24).prop_map(Mutation::Meta),
        2 => prop::collection::vec((any::<usize>(), any::<u8>()), 1..16).prop_map(Mutation::Anywhere),
        2 => (0usize..64, prop_oneof![Just(0u8), Just(0xff), any::<u8>()]).prop_map(|(s, b)| Mutation::Sector(s, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn mutated_iso_gives_findings_not_panics(ms in prop::collection::vec(mutation(), 1..4)) {
        let mut b = valid_iso().clone();
        for m in ms {
            match m {
                Mutation::Meta(v) | Mutation::Anywhere(v) => {
                    for (at, x) in v {
                        if !b.is_empty() {
                            let i = at % b.len();
                            b[i] = x;
                        }
                    }
                }
                Mutation::Sector(s, x) => {
                    let start = (16 + s) * 2048;
                    if start < b.len() {
                        let end = (start + 2048).min(b.len());
                        b[start..end].fill(x);
                    }
                }
                Mutation::Truncate(n) => {
                    let n = n % (b.len() + 1);
                    b.truncate(n);
                }
            }
        }
        let changed = b != *valid_iso();
        let r = validate_iso(Cursor::new(b), "mutated.iso");
        // Both renderings work on whatever came out.
        let _ = r.to_text();
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        prop_assert_eq!(v["errors"].as_u64().unwrap() as usize, r.errors());
        if !changed {
            prop_assert_eq!(r.errors(), 0);
        }
    }
}
