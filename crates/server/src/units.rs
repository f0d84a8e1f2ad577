//! Humane sizes and durations: parsing for the command line, formatting for log lines.

use std::fmt;
use std::time::Duration;

/// A size or duration the command line could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid {what}: {hint}")]
pub struct ParseUnitError {
    input: String,
    what: &'static str,
    hint: &'static str,
}

const SIZE_HINT: &str =
    "use a whole number with an optional unit, e.g. 1048576, 512K, 10M, 10G, 2T \
                         (binary units: 1K = 1024 bytes)";
const DURATION_HINT: &str =
    "use a number with a unit, e.g. 500ms, 10s, 5m, 1h, 7d (a bare number is seconds)";
const TIMEOUT_HINT: &str = "it must be longer than zero, e.g. 500ms, 10s, 5m, 1h";

/// Parses `10G`, `512k`, `1MiB`, `4096`: binary units (K = 1024), case-insensitive.
pub fn parse_size(input: &str) -> Result<u64, ParseUnitError> {
    let err = || ParseUnitError {
        input: input.to_owned(),
        what: "size",
        hint: SIZE_HINT,
    };
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| err())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(err()),
    };
    n.checked_mul(1 << shift).ok_or_else(err)
}

/// Parses `500ms`, `10s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, ParseUnitError> {
    let err = || ParseUnitError {
        input: input.to_owned(),
        what: "duration",
        hint: DURATION_HINT,
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| err())?;
    let secs = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => n / 1000.0,
        "" | "s" | "sec" | "secs" => n,
        "m" | "min" | "mins" => n * 60.0,
        "h" | "hour" | "hours" => n * 3600.0,
        "d" | "day" | "days" => n * 86_400.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| err())
}

/// Parses a timeout: a duration as [`parse_duration`] reads it, longer than zero.
pub fn parse_timeout(input: &str) -> Result<Duration, ParseUnitError> {
    let d = parse_duration(input)?;
    if d.is_zero() {
        return Err(ParseUnitError {
            input: input.to_owned(),
            what: "timeout",
            hint: TIMEOUT_HINT,
        });
    }
    Ok(d)
}

/// A byte count for people: `512 B`, `1.5 MiB`.
#[derive(Debug, Clone, Copy)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    /// Integer arithmetic only (no float formatting on the per-file log line): the largest
    /// unit that leaves at least 1, to one decimal rounded half to even, as `{:.1}` of the
    /// exact quotient would show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        let n = self.0;
        if n < 1024 {
            return write!(f, "{n} B");
        }
        // The unit: 1024^(shift / 10), with n / 1024^(shift / 10) < 1024 unless at PiB.
        let (mut shift, mut unit) = (10u32, UNITS[0]);
        for u in &UNITS[1..] {
            if n >> shift < 1024 {
                break;
            }
            shift += 10;
            unit = u;
        }
        let den = 1u128 << shift;
        let tenths = u128::from(n) * 10;
        let (mut q, r) = (tenths / den, tenths % den);
        if 2 * r > den || (2 * r == den && q % 2 == 1) {
            q += 1;
        }
        // Tenths of the unit, at most 163,840 (u64::MAX in PiB): shown as u64, whose
        // formatting costs far less than u128's.
        let q = u64::try_from(q).unwrap_or(u64::MAX);
        write!(f, "{}.{} {unit}", q / 10, q % 10)
    }
}

/// A transfer rate for log lines: bytes over elapsed time, `12.3 MiB/s`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Bytes moved.
    pub bytes: u64,
    /// Time taken.
    pub elapsed: Duration,
}

impl fmt::Display for Rate {
    /// Whole bytes per second (rounded down) shown as [`Bytes`]; `- B/s` for no time at all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.elapsed.as_nanos();
        if nanos == 0 {
            return f.write_str("- B/s");
        }
        let per_sec = u128::from(self.bytes) * 1_000_000_000 / nanos;
        write!(f, "{}/s", Bytes(u64::try_from(per_sec).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2tb"), Ok(2 << 40));
        for bad in ["", "G", "1.5G", "-1", "10X", "99999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("10X").unwrap_err().to_string().contains("10G"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "s", "10y", "-1s", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(Bytes(10).to_string(), "10 B");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(3 << 30).to_string(), "3.0 GiB");
        let r = Rate {
            bytes: 2 << 20,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(r.to_string(), "1.0 MiB/s");
    }

    /// What the float formatting (`{:.1}` of the quotient) these replace showed.
    fn by_float(n: u64) -> String {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if n < 1024 {
            return format!("{n} B");
        }
        let mut v = n as f64 / 1024.0;
        let mut unit = UNITS[0];
        for u in &UNITS[1..] {
            if v < 1024.0 {
                break;
            }
            v /= 1024.0;
            unit = u;
        }
        format!("{v:.1} {unit}")
    }

    #[test]
    fn integer_formatting_rounds_like_the_float_formatting_it_replaces() {
        // Rounding edges: ties to even (1.25 -> 1.2, 1.75 -> 1.8), just below and above a
        // tie, a unit's last value rounding up to 1024.0, the unit boundaries.
        let cases = [
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1280, "1.2 KiB"),
            (1281, "1.3 KiB"),
            (1792, "1.8 KiB"),
            (1843, "1.8 KiB"),
            (1126, "1.1 KiB"),
            (1127, "1.1 KiB"),
            (4096, "4.0 KiB"),
            ((1 << 20) - 1, "1024.0 KiB"),
            (1 << 20, "1.0 MiB"),
            ((5 << 20) / 4, "1.2 MiB"),
            ((5 << 20) / 4 + 1, "1.3 MiB"),
            ((1 << 30) - 1, "1024.0 MiB"),
            ((1 << 40) * 3 / 2, "1.5 TiB"),
            (1 << 50, "1.0 PiB"),
            (u64::MAX, "16384.0 PiB"),
        ];
        for (n, shown) in cases {
            assert_eq!(Bytes(n).to_string(), shown, "{n}");
            if n < 1 << 53 {
                assert_eq!(Bytes(n).to_string(), by_float(n), "{n}");
            }
        }
        // Every size up to 2 MiB in steps that hit each tenth's edges, and powers around units.
        for n in (0..2 << 20).step_by(17).chain((10..53).flat_map(|s| {
            let p = 1u64 << s;
            [p - 1, p, p + 1, p + p / 20, p + p / 20 + 1, p + p / 40 * 3]
        })) {
            assert_eq!(Bytes(n).to_string(), by_float(n), "{n}");
        }
    }

    #[test]
    fn rates_at_the_edges() {
        let rate = |bytes, elapsed| Rate { bytes, elapsed }.to_string();
        assert_eq!(rate(4096, Duration::ZERO), "- B/s");
        assert_eq!(rate(0, Duration::from_secs(1)), "0 B/s");
        assert_eq!(rate(4096, Duration::from_micros(26_077)), "153.4 KiB/s");
        assert_eq!(rate(4096, Duration::from_nanos(1)), "3.7 TiB/s");
        assert_eq!(rate(u64::MAX, Duration::from_nanos(1)), "16384.0 PiB/s");
        assert_eq!(rate(3 << 20, Duration::from_secs(2)), "1.5 MiB/s");
    }
}
