//! The one header policy for the deterministic tars buildchain writes (built image layers in
//! [`super::local`], docker-archives in [`super::layout`]): GNU headers (names over 100 bytes
//! through GNU long-name entries), uid/gid 0, empty user and group names, a fixed mtime.

use tar::{EntryType, Header};

/// A header of `kind` with `mode`, `size` and `mtime` under the policy above.
pub(crate) fn header(kind: EntryType, mode: u32, size: u64, mtime: u64) -> std::io::Result<Header> {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_username("")?;
    h.set_groupname("")?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_headers_round_trip_a_long_name() {
        let long = format!("{}/file", "d".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(EntryType::Regular, 0o644, 3, 1_700_000_000).unwrap();
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        // GNU magic + version ("ustar  \0"), not POSIX ustar ("ustar\000").
        assert_eq!(&bytes[257..265], b"ustar  \0");
        let mut a = tar::Archive::new(&bytes[..]);
        let e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some(long.as_str()));
        let h = e.header();
        assert!(h.as_gnu().is_some());
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.mtime().unwrap(), 1_700_000_000);
        assert_eq!(h.mode().unwrap(), 0o644);
        assert_eq!(h.username().unwrap(), Some(""));
    }
}
