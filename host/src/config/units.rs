//! Sizes and durations as operators write them: `4096`, `64KiB`, `16MiB`,
//! `1GiB` (binary) or `64KB`, `16MB` (decimal); `500ms`, `3s`, `10m`, `1h 30m`
//! (humantime). Both return a message that says what would have been
//! accepted, ready to become a located problem.

use std::time::Duration;

/// Parses a size in bytes: an integer with an optional `B`, `KiB`, `MiB`,
/// `GiB`, `KB`, `MB` or `GB` suffix (case-insensitive, space allowed).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    let unit: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(size_error(text)),
    };
    let number: u64 = number.parse().map_err(|_| size_error(text))?;
    number.checked_mul(unit).ok_or_else(|| format!("size `{text}` is too large"))
}

fn size_error(text: &str) -> String {
    format!("not a size: `{text}` (write a whole number of bytes, optionally with KiB, MiB or GiB, like 4096 or 16MiB)")
}

/// Parses a duration with a unit: `500ms`, `3s`, `10m`, `1h 30m`; `0` alone
/// is accepted too.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    humantime::parse_duration(text)
        .map_err(|e| format!("not a duration: `{text}` ({e}; write a number with a unit, like 500ms, 3s or 10m)"))
}

/// Formats a duration the way it is written in the config (`10ms`, `3s`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Formats a size with the largest binary unit that divides it.
pub fn format_size(bytes: u64) -> String {
    match bytes {
        0 => "0".to_owned(),
        b if b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => b.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("16 mib"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("100B"), Ok(100));
        for bad in ["", "MiB", "1.5MiB", "-1", "16Mb/s", "16 TiB", "0x10"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.starts_with("not a size"), "{bad}: {err}");
        }
        assert!(parse_size("99999999999999GiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        let err = parse_duration("3").unwrap_err();
        assert!(err.starts_with("not a duration: `3`") && err.contains("like 500ms"), "{err}");
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_size(16 << 20), "16MiB");
        assert_eq!(format_size(4096), "4KiB");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_duration(Duration::from_millis(10)), "10ms");
        assert_eq!(parse_duration(&format_duration(Duration::from_secs(600))), Ok(Duration::from_secs(600)));
    }
}
