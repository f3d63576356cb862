//! Rates and sizes as people write them: "10mbit", "2MB/s", "64KB", "1MiB".

/// Splits `s` into a decimal number (as numerator and power-of-ten denominator,
/// so "1.5" stays exact) and the unit text after it.
fn split_number(s: &str) -> Result<(u128, u128, &str), String> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || frac.contains('.') || (num.contains('.') && frac.is_empty()) {
        return Err(format!("{s:?} does not start with a number"));
    }
    if int.len() + frac.len() > 30 {
        return Err(format!("{s:?} is too large"));
    }
    let digits = format!("{int}{frac}");
    let value: u128 = digits
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    Ok((value, 10u128.pow(frac.len() as u32), unit.trim()))
}

/// `value / denom * mul / div`, refused when it is zero or does not fit.
fn scale(
    s: &str,
    value: u128,
    denom: u128,
    mul: u128,
    div: u128,
    what: &str,
) -> Result<u64, String> {
    let out = value
        .checked_mul(mul)
        .map(|v| v / (denom * div))
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if out == 0 {
        return Err(format!("{s:?} is below 1 {what}"));
    }
    u64::try_from(out).map_err(|_| format!("{s:?} is too large"))
}

/// Multiplier of a size prefix: "", "k", "m", "g", "t" decimal; "ki", "mi", ... binary.
fn prefix(p: &str) -> Option<u128> {
    Some(match p.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        _ => return None,
    })
}

/// A rate in bytes per second. A plain number is bytes/s; "kbit", "mbit", "gbit"
/// (also "bit", "tbit", "kibit" ..., optionally with "/s") are bits per second;
/// "B/s", "KB/s", "MB/s", "GB/s" (and "KiB/s" ... binary) are bytes per second.
/// k/m/g are decimal (1000). Byte units need the capital `B`, since a lower-case
/// `b` conventionally means bits and guessing would be off by eight.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let (value, denom, unit) = split_number(s)?;
    let bad_unit =
        || format!("{s:?}: unknown rate unit {unit:?} (use e.g. \"10mbit\" or \"2MB/s\")");
    if unit.is_empty() {
        return scale(s, value, denom, 1, 1, "byte/s");
    }
    let lower = unit.to_ascii_lowercase();
    let lower = lower.strip_suffix("/s").unwrap_or(&lower);
    if let Some(p) = lower.strip_suffix("bit") {
        let mul = prefix(p).ok_or_else(bad_unit)?;
        return scale(s, value, denom, mul, 8, "byte/s");
    }
    if let Some(p) = unit.strip_suffix("B/s") {
        let mul = prefix(p).ok_or_else(bad_unit)?;
        return scale(s, value, denom, mul, 1, "byte/s");
    }
    Err(bad_unit())
}

/// A size in bytes: a plain number, or with "B", "KB", "MB", "GB" (decimal, also
/// just "K", "M", "G") or "KiB", "MiB", "GiB" (binary). Case does not matter.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (value, denom, unit) = split_number(s)?;
    let lower = unit.to_ascii_lowercase();
    let p = lower.strip_suffix('b').unwrap_or(&lower);
    let mul = prefix(p).ok_or_else(|| {
        format!("{s:?}: unknown size unit {unit:?} (use e.g. \"64KB\" or \"1MiB\")")
    })?;
    scale(s, value, denom, mul, 1, "byte")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10mbit"), Ok(1_250_000));
        assert_eq!(parse_rate("10 Mbit/s"), Ok(1_250_000));
        assert_eq!(parse_rate("500kbit"), Ok(62_500));
        assert_eq!(parse_rate("1gbit"), Ok(125_000_000));
        assert_eq!(parse_rate("1.5mbit"), Ok(187_500));
        assert_eq!(parse_rate("2MB/s"), Ok(2_000_000));
        assert_eq!(parse_rate("1KiB/s"), Ok(1024));
        assert_eq!(parse_rate("3B/s"), Ok(3));
        assert_eq!(parse_rate("4096"), Ok(4096));
        assert_eq!(parse_rate("8bit"), Ok(1));
    }

    #[test]
    fn bad_rates() {
        for s in [
            "",
            "mbit",
            "10mb/s",
            "10 furlongs",
            "1bit",
            "0",
            "1..2mbit",
            "1.mbit",
            ".5mbit",
            "99999999999999999999999999gbit",
            "-1",
        ] {
            assert!(parse_rate(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("64kb"), Ok(64_000));
        assert_eq!(parse_size("64K"), Ok(64_000));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("16KiB"), Ok(16 << 10));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("1500B"), Ok(1500));
        assert_eq!(parse_size("1.5KB"), Ok(1500));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
    }

    #[test]
    fn bad_sizes() {
        for s in ["", "KB", "0", "12 parsecs", "0.1B", "1e3"] {
            assert!(parse_size(s).is_err(), "{s:?} accepted");
        }
    }
}
