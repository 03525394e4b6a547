//! Byte-level helpers shared by the writer and the reader.

/// Appends a both-endian u32 (LE then BE).
pub(crate) fn both32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
    v.extend_from_slice(&x.to_be_bytes());
}

/// Appends a both-endian u16 (LE then BE).
pub(crate) fn both16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
    v.extend_from_slice(&x.to_be_bytes());
}

/// Writes a both-endian u32 at `buf[at..at+8]`.
pub(crate) fn put_both32(buf: &mut [u8], at: usize, x: u32) {
    buf[at..at + 4].copy_from_slice(&x.to_le_bytes());
    buf[at + 4..at + 8].copy_from_slice(&x.to_be_bytes());
}

/// Writes a both-endian u16 at `buf[at..at+4]`.
pub(crate) fn put_both16(buf: &mut [u8], at: usize, x: u16) {
    buf[at..at + 2].copy_from_slice(&x.to_le_bytes());
    buf[at + 2..at + 4].copy_from_slice(&x.to_be_bytes());
}

/// Little-endian u32 at `at` (caller checked bounds).
pub(crate) fn le32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Big-endian u32 at `at` (caller checked bounds).
pub(crate) fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Civil date (year, month 1-12, day 1-31, hour, minute, second) of a unix time (UTC).
pub(crate) fn civil(ts: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = crate::date::civil_from_days(days);
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        ((secs % 3600) / 60) as u32,
        (secs % 60) as u32,
    )
}

pub(crate) use crate::date::days_from_civil;

/// 7-byte directory-record date (ECMA-119 9.1.5), GMT offset 0.
pub(crate) fn dir_date(ts: i64) -> [u8; 7] {
    let (y, mo, d, h, mi, s) = civil(ts);
    let y = (y - 1900).clamp(0, 255) as u8;
    [y, mo as u8, d as u8, h as u8, mi as u8, s as u8, 0]
}

/// Unix time of a 7-byte directory-record date (best effort, never panics).
pub(crate) fn parse_dir_date(b: &[u8]) -> Option<i64> {
    if b.len() < 7 || b[1] == 0 || b[1] > 12 || b[2] == 0 || b[2] > 31 {
        return None;
    }
    let days = days_from_civil(1900 + b[0] as i64, b[1] as u32, b[2] as u32);
    let off = (b[6] as i8) as i64 * 15 * 60;
    Some(days * 86_400 + b[3] as i64 * 3600 + b[4] as i64 * 60 + b[5] as i64 - off)
}

/// 17-byte volume-descriptor date (ECMA-119 8.4.26.1), GMT offset 0.
pub(crate) fn vd_date(ts: i64) -> [u8; 17] {
    let (y, mo, d, h, mi, s) = civil(ts);
    let text = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}00",
        y.clamp(0, 9999),
        mo,
        d,
        h,
        mi,
        s
    );
    let mut out = [0u8; 17];
    out[..16].copy_from_slice(&text.as_bytes()[..16]);
    out
}

/// The "not specified" volume-descriptor date.
pub(crate) fn vd_date_unset() -> [u8; 17] {
    let mut out = [b'0'; 17];
    out[16] = 0;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_roundtrip() {
        for ts in [0i64, 1_700_000_000, 951_782_400, 4_102_444_800, -86_400] {
            let (y, m, d, h, mi, s) = civil(ts);
            let back = days_from_civil(y, m, d) * 86_400 + (h * 3600 + mi * 60 + s) as i64;
            assert_eq!(back, ts);
        }
        assert_eq!(civil(1_700_000_000), (2023, 11, 14, 22, 13, 20));
    }
}
