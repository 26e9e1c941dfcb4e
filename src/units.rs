//! Parsing and printing of the units users type: durations (`2.5`, `500ms`,
//! `1m`), byte counts (`65536`, `64k`, `4MiB`) and switches (`on`/`off`).
//! Pure functions; the messages name the bad value and the allowed form.

use std::time::Duration;

/// Parse a duration: a bare number is seconds; suffixes `us`, `ms`, `s`, `m`, `h`.
///
/// # Errors
/// A message naming the value and the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("'{}' is not a duration", s.escape_debug())),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{}' is not a duration", s.escape_debug()))?;
    let secs = n * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("'{}' is too long", s.escape_debug()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parse a duration and check it lies in `min..=max`.
///
/// # Errors
/// A message naming the value and the allowed range.
pub fn duration_in(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min || d > max {
        let lo = if min.is_zero() {
            "0".to_string()
        } else {
            format_duration(min)
        };
        return Err(format!(
            "'{}' is out of range ({lo}-{})",
            s.escape_debug(),
            format_duration(max)
        ));
    }
    Ok(d)
}

/// Print a duration the way `parse_duration` reads it back (`500ms`, `2.5s`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 1.0 {
        format!("{}us", d.as_micros())
    } else if ms < 1000.0 {
        format!("{}ms", trim_float(ms))
    } else {
        format!("{}s", trim_float(d.as_secs_f64()))
    }
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Parse a byte count: bare bytes, or `k`/`K`/`KiB` (1024), `m`/`M`/`MiB`, `g`/`G`/`GiB`.
///
/// # Errors
/// A message naming the value when it is malformed or does not fit in 64 bits.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("'{}' is not a byte count", s.escape_debug())),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{}' is not a byte count", s.escape_debug()))
}

/// Print bytes in the largest binary unit that divides them (`64KiB`).
pub fn format_bytes(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// A quantity of bytes for people, in binary units as `-n 100M` reads them
/// (`1.50 GiB`, `512 B`). Rates are in decimal bits (`Gbit/s`), as iperf3
/// prints them.
pub fn size(n: u64) -> String {
    let f = n as f64;
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        let base = (1u64 << shift) as f64;
        if f >= base {
            return format!("{:.2} {unit}", f / base);
        }
    }
    format!("{n} B")
}

/// `1 stream`, `2 streams`: a count with its noun, singular or plural.
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Parse a switch: on/off, true/false, yes/no, 1/0.
///
/// # Errors
/// A message naming the value and the accepted words.
pub fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("'{}' is not on or off", s.escape_debug())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary_and_plurals_proper() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(100 << 20), "100.00 MiB");
        assert_eq!(size(3 << 29), "1.50 GiB");
        assert_eq!(plural(1, "stream"), "1 stream");
        assert_eq!(plural(0, "line"), "0 lines");
        assert_eq!(plural(3, "line"), "3 lines");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration(" 3 s ").unwrap(), Duration::from_secs(3));
        for bad in ["", "-1", "x", "1.2.3", "5 parsecs", "1e400", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for d in ["500ms", "2.5s", "3s", "250us"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn ranges() {
        let (lo, hi) = (Duration::from_millis(1), Duration::from_secs(60));
        assert_eq!(duration_in("2s", lo, hi).unwrap(), Duration::from_secs(2));
        assert_eq!(
            duration_in("61s", lo, hi).unwrap_err(),
            "'61s' is out of range (1ms-60s)"
        );
        assert_eq!(
            duration_in("2h", Duration::ZERO, Duration::from_secs(3600)).unwrap_err(),
            "'2h' is out of range (0-3600s)"
        );
    }

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("65536").unwrap(), 65536);
        assert_eq!(parse_bytes("64k").unwrap(), 65536);
        assert_eq!(parse_bytes("4MiB").unwrap(), 4 << 20);
        assert!(parse_bytes("99999999999999999999").is_err());
        assert!(parse_bytes("20000000000G").is_err());
        assert!(parse_bytes("-1").is_err());
        assert_eq!(format_bytes(65536), "64KiB");
        assert_eq!(format_bytes(1000), "1000");
    }

    #[test]
    fn switches() {
        assert!(parse_switch("ON").unwrap());
        assert!(!parse_switch("off").unwrap());
        assert!(parse_switch("maybe").is_err());
    }
}
