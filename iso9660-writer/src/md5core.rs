//! MD5 (RFC 1321) whose running state can be exported and restored, so an incremental
//! re-master can resume the isomd5sum computation at the end of an unchanged image prefix
//! (`md-5` 0.10 keeps its state private).

/// A running MD5.
#[derive(Clone)]
pub struct Md5 {
    state: [u32; 4],
    /// Bytes hashed so far (including the buffered ones).
    len: u64,
    buf: [u8; 64],
    buf_len: usize,
}

/// The exported state of an [`Md5`] at a 64-byte boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Md5State {
    /// The four chaining words.
    pub words: [u32; 4],
    /// Bytes hashed so far (a multiple of 64).
    pub len: u64,
}

const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

impl Default for Md5 {
    fn default() -> Self {
        Md5::new()
    }
}

impl Md5 {
    /// A fresh MD5.
    pub fn new() -> Self {
        Md5 {
            state: INIT,
            len: 0,
            buf: [0; 64],
            buf_len: 0,
        }
    }

    /// The state, when the bytes hashed so far are a multiple of 64.
    pub fn export(&self) -> Option<Md5State> {
        (self.buf_len == 0).then_some(Md5State {
            words: self.state,
            len: self.len,
        })
    }

    /// Resumes from an exported state (`None` unless `len` is a multiple of 64).
    pub fn resume(s: Md5State) -> Option<Self> {
        (s.len % 64 == 0).then_some(Md5 {
            state: s.words,
            len: s.len,
            buf: [0; 64],
            buf_len: 0,
        })
    }

    /// Feeds bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buf_len > 0 {
            let n = (64 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + n].copy_from_slice(&data[..n]);
            self.buf_len += n;
            data = &data[n..];
            if self.buf_len < 64 {
                return;
            }
            let block = self.buf;
            compress(&mut self.state, &block);
            self.buf_len = 0;
        }
        let mut blocks = data.chunks_exact(64);
        for b in &mut blocks {
            compress(&mut self.state, b.try_into().expect("64 bytes"));
        }
        let rest = blocks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// The digest.
    pub fn finalize(mut self) -> [u8; 16] {
        let bits = self.len.wrapping_mul(8);
        let mut pad = [0u8; 72];
        pad[0] = 0x80;
        let n = if self.buf_len < 56 {
            56 - self.buf_len
        } else {
            120 - self.buf_len
        };
        self.update(&pad[..n]);
        self.update(&bits.to_le_bytes());
        debug_assert_eq!(self.buf_len, 0);
        let mut out = [0u8; 16];
        for (i, w) in self.state.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

macro_rules! step {
    ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:expr) => {
        $a = $b.wrapping_add(
            $a.wrapping_add($f($b, $c, $d))
                .wrapping_add($m)
                .wrapping_add($k)
                .rotate_left($s),
        );
    };
}

#[inline(always)]
fn f(x: u32, y: u32, z: u32) -> u32 {
    z ^ (x & (y ^ z))
}
#[inline(always)]
fn g(x: u32, y: u32, z: u32) -> u32 {
    y ^ (z & (x ^ y))
}
#[inline(always)]
fn h(x: u32, y: u32, z: u32) -> u32 {
    x ^ y ^ z
}
#[inline(always)]
fn i(x: u32, y: u32, z: u32) -> u32 {
    y ^ (x | !z)
}

/// One MD5 block.
#[inline]
fn compress(state: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    for (w, c) in m.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    step!(f, a, b, c, d, m[0], 0xd76a_a478, 7);
    step!(f, d, a, b, c, m[1], 0xe8c7_b756, 12);
    step!(f, c, d, a, b, m[2], 0x2420_70db, 17);
    step!(f, b, c, d, a, m[3], 0xc1bd_ceee, 22);
    step!(f, a, b, c, d, m[4], 0xf57c_0faf, 7);
    step!(f, d, a, b, c, m[5], 0x4787_c62a, 12);
    step!(f, c, d, a, b, m[6], 0xa830_4613, 17);
    step!(f, b, c, d, a, m[7], 0xfd46_9501, 22);
    step!(f, a, b, c, d, m[8], 0x6980_98d8, 7);
    step!(f, d, a, b, c, m[9], 0x8b44_f7af, 12);
    step!(f, c, d, a, b, m[10], 0xffff_5bb1, 17);
    step!(f, b, c, d, a, m[11], 0x895c_d7be, 22);
    step!(f, a, b, c, d, m[12], 0x6b90_1122, 7);
    step!(f, d, a, b, c, m[13], 0xfd98_7193, 12);
    step!(f, c, d, a, b, m[14], 0xa679_438e, 17);
    step!(f, b, c, d, a, m[15], 0x49b4_0821, 22);

    step!(g, a, b, c, d, m[1], 0xf61e_2562, 5);
    step!(g, d, a, b, c, m[6], 0xc040_b340, 9);
    step!(g, c, d, a, b, m[11], 0x265e_5a51, 14);
    step!(g, b, c, d, a, m[0], 0xe9b6_c7aa, 20);
    step!(g, a, b, c, d, m[5], 0xd62f_105d, 5);
    step!(g, d, a, b, c, m[10], 0x0244_1453, 9);
    step!(g, c, d, a, b, m[15], 0xd8a1_e681, 14);
    step!(g, b, c, d, a, m[4], 0xe7d3_fbc8, 20);
    step!(g, a, b, c, d, m[9], 0x21e1_cde6, 5);
    step!(g, d, a, b, c, m[14], 0xc337_07d6, 9);
    step!(g, c, d, a, b, m[3], 0xf4d5_0d87, 14);
    step!(g, b, c, d, a, m[8], 0x455a_14ed, 20);
    step!(g, a, b, c, d, m[13], 0xa9e3_e905, 5);
    step!(g, d, a, b, c, m[2], 0xfcef_a3f8, 9);
    step!(g, c, d, a, b, m[7], 0x676f_02d9, 14);
    step!(g, b, c, d, a, m[12], 0x8d2a_4c8a, 20);

    step!(h, a, b, c, d, m[5], 0xfffa_3942, 4);
    step!(h, d, a, b, c, m[8], 0x8771_f681, 11);
    step!(h, c, d, a, b, m[11], 0x6d9d_6122, 16);
    step!(h, b, c, d, a, m[14], 0xfde5_380c, 23);
    step!(h, a, b, c, d, m[1], 0xa4be_ea44, 4);
    step!(h, d, a, b, c, m[4], 0x4bde_cfa9, 11);
    step!(h, c, d, a, b, m[7], 0xf6bb_4b60, 16);
    step!(h, b, c, d, a, m[10], 0xbebf_bc70, 23);
    step!(h, a, b, c, d, m[13], 0x289b_7ec6, 4);
    step!(h, d, a, b, c, m[0], 0xeaa1_27fa, 11);
    step!(h, c, d, a, b, m[3], 0xd4ef_3085, 16);
    step!(h, b, c, d, a, m[6], 0x0488_1d05, 23);
    step!(h, a, b, c, d, m[9], 0xd9d4_d039, 4);
    step!(h, d, a, b, c, m[12], 0xe6db_99e5, 11);
    step!(h, c, d, a, b, m[15], 0x1fa2_7cf8, 16);
    step!(h, b, c, d, a, m[2], 0xc4ac_5665, 23);

    step!(i, a, b, c, d, m[0], 0xf429_2244, 6);
    step!(i, d, a, b, c, m[7], 0x432a_ff97, 10);
    step!(i, c, d, a, b, m[14], 0xab94_23a7, 15);
    step!(i, b, c, d, a, m[5], 0xfc93_a039, 21);
    step!(i, a, b, c, d, m[12], 0x655b_59c3, 6);
    step!(i, d, a, b, c, m[3], 0x8f0c_cc92, 10);
    step!(i, c, d, a, b, m[10], 0xffef_f47d, 15);
    step!(i, b, c, d, a, m[1], 0x8584_5dd1, 21);
    step!(i, a, b, c, d, m[8], 0x6fa8_7e4f, 6);
    step!(i, d, a, b, c, m[15], 0xfe2c_e6e0, 10);
    step!(i, c, d, a, b, m[6], 0xa301_4314, 15);
    step!(i, b, c, d, a, m[13], 0x4e08_11a1, 21);
    step!(i, a, b, c, d, m[4], 0xf753_7e82, 6);
    step!(i, d, a, b, c, m[11], 0xbd3a_f235, 10);
    step!(i, c, d, a, b, m[2], 0x2ad7_d2bb, 15);
    step!(i, b, c, d, a, m[9], 0xeb86_d391, 21);

    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;

    fn hex(d: [u8; 16]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn rfc1321_vectors() {
        for (input, want) in [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ] {
            let mut m = Md5::new();
            m.update(input.as_bytes());
            assert_eq!(hex(m.finalize()), want, "MD5({input:?})");
        }
    }

    #[test]
    fn matches_md5_crate_across_slicings_and_resume() {
        let data: Vec<u8> = (0..200_003u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let want: [u8; 16] = md5::Md5::digest(&data).into();
        for step in [1usize, 63, 64, 65, 4096, 100_000] {
            let mut m = Md5::new();
            for c in data.chunks(step) {
                m.update(c);
            }
            assert_eq!(m.finalize(), want, "step {step}");
        }
        let mut m = Md5::new();
        m.update(&data[..131_072]);
        let s = m.export().expect("aligned");
        assert_eq!(s.len, 131_072);
        let mut r = Md5::resume(s).expect("aligned");
        r.update(&data[131_072..]);
        assert_eq!(r.finalize(), want);
        let mut m = Md5::new();
        m.update(&data[..100]);
        assert!(m.export().is_none());
    }
}
