//! RPM version comparison (`rpmvercmp`, from the `rpm-version` crate) and
//! `[epoch:]version-release` ordering.

use std::cmp::Ordering;

/// Compares two version (or release) strings the way rpm's `rpmvercmp` does: alternating
/// numeric and alphabetic segments, separators ignored, `~` sorts before anything (pre-releases),
/// `^` after the base but before anything longer. The comparison is the `rpm-version` crate's
/// (the one `rpm` uses), checked against rpm's own `rpm.vercmp` on the table below.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    rpm_version::Evr::new("", a, "").cmp(&rpm_version::Evr::new("", b, ""))
}

/// An `epoch:version-release`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Evr {
    /// Epoch (0 when absent).
    pub epoch: u64,
    /// Version.
    pub version: String,
    /// Release (may be empty in dependency versions).
    pub release: String,
}

impl Evr {
    /// Parses `[E:]V[-R]`.
    pub fn parse(s: &str) -> Evr {
        let (epoch, rest) = match s.split_once(':') {
            Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) && !e.is_empty() => {
                (e.parse().unwrap_or(0), r)
            }
            _ => (0, s),
        };
        let (version, release) = match rest.rsplit_once('-') {
            Some((v, r)) => (v.to_string(), r.to_string()),
            None => (rest.to_string(), String::new()),
        };
        Evr {
            epoch,
            version,
            release,
        }
    }
}

impl std::fmt::Display for Evr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}-{}", self.epoch, self.version, self.release)
    }
}

impl Ord for Evr {
    fn cmp(&self, o: &Self) -> Ordering {
        self.epoch
            .cmp(&o.epoch)
            .then_with(|| rpmvercmp(&self.version, &o.version))
            .then_with(|| rpmvercmp(&self.release, &o.release))
    }
}

impl PartialOrd for Evr {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn vercmp_cases() {
        // Cases from rpm's own test-suite (rpmvercmp.at).
        for (a, b, o) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("2.0.1a", "2.0.1", Greater),
            ("5.5p1", "5.5p2", Less),
            ("5.5p10", "5.5p1", Greater),
            ("10xyz", "10.1xyz", Less),
            ("xyz10", "xyz10.1", Less),
            ("xyz.4", "8", Less),
            ("1.0010", "1.9", Greater),
            ("1.05", "1.5", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git123", "1.0~rc1", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.01", Less),
            ("1.0^git1", "1.0^git2", Less),
            ("1.0^git1~pre", "1.0^git1", Less),
            ("a", "1", Less),
            ("2_0", "2.0", Equal),
            ("6.0.rc1", "6.0", Greater),
            // More, each checked with `rpm --eval '%{lua: print(rpm.vercmp("a", "b"))}'`.
            ("1.0a", "1.0.a", Equal),
            ("a+", "a_", Equal),
            ("+a", "_a", Equal),
            ("+_", "_+", Equal),
            ("1.0^", "1.0~", Greater),
            ("1.0^git1", "1.0", Greater),
            ("1.0~rc1^git1", "1.0~rc1", Greater),
            ("1.0~rc1^git1", "1.0~rc2", Less),
            ("1.30.1", "1.30.0", Greater),
            ("1.0~rc1", "1.0~rc1", Equal),
            ("1.0^git1~pre", "1.0^git1~pre", Equal),
            ("1.0", "1.0^", Less),
            ("a", "b", Less),
            ("b", "a", Greater),
            ("00", "0", Equal),
            ("0010", "10", Equal),
            ("10b2", "10a1", Greater),
            ("10a2", "10b2", Less),
            ("1.0", "1", Greater),
            ("1.0.0", "1.0", Greater),
        ] {
            assert_eq!(rpmvercmp(a, b), o, "{a} vs {b}");
            assert_eq!(rpmvercmp(b, a), o.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn evr_order() {
        assert!(Evr::parse("1:1.0-1") > Evr::parse("2.0-1"));
        assert!(Evr::parse("1.30.1-150500.1.1") > Evr::parse("1.30.0-150500.1.1"));
        assert_eq!(Evr::parse("0:1.0-1"), Evr::parse("1.0-1"));
    }
}
