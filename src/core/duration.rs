//! Human durations (`90s`, `15m`, `2h`, `7d`), accepted by every flag that takes one.

use std::time::Duration;

/// Parses `<number><unit>` with unit `s`, `m`, `h` or `d` (a bare number means seconds).
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("invalid duration {text:?}: expected e.g. 90s, 15m, 2h or 7d"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => {
            return Err(format!("invalid duration unit in {text:?}: use s, m, h or d"));
        }
    };
    secs.map(Duration::from_secs).ok_or_else(|| format!("duration {text:?} is too large"))
}

/// Formats a duration the way `parse` reads it, choosing the largest exact unit.
pub(crate) fn format(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse("5"), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        assert!(parse("").is_err());
        assert!(parse("1w").unwrap_err().contains("use s, m, h or d"));
        assert!(parse("h").is_err());
        assert!(parse("99999999999999999999d").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for text in ["90s", "15m", "2h", "7d", "0s"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
