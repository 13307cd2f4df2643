//! Lenient readers for the single values the vendor sends: times, durations, money, whole
//! numbers, booleans and enumerated words. Each takes the value's text and says precisely
//! what was wrong when it cannot read it; that message ends up in `parse_warnings`.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDateTime, NaiveTime, TimeZone, Utc};
use rust_decimal::Decimal;

/// Quotes a value for an error message, cut short so that a hostile value cannot bloat it.
pub fn quote(raw: &str) -> String {
    const MAX: usize = 60;
    let mut s: String = raw.chars().take(MAX).collect();
    if raw.chars().count() > MAX {
        s.push('…');
    }
    format!("{s:?}")
}

/// Normalises an enumerated vendor word: trimmed, lowercased, runs of spaces, `-` and `_`
/// turned into one `_`; the American `canceled` is spelled `cancelled` like the vendor's list.
pub fn normalize_enum(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut pending_sep = false;
    for ch in raw.trim().chars() {
        if ch.is_whitespace() || ch == '-' || ch == '_' {
            pending_sep = !out.is_empty();
        } else {
            if pending_sep {
                out.push('_');
                pending_sep = false;
            }
            out.extend(ch.to_lowercase());
        }
    }
    if out == "canceled" {
        out.replace_range(.., "cancelled");
    }
    out
}

/// Reads a point in time. Accepted: RFC 3339 and ISO 8601 date-times with `T` or a space,
/// with or without fractions of a second, with an offset `Z`, `+0000`, `+05:30` or `+05`,
/// or without any offset (read as UTC).
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    let s = raw.trim();
    let err = || format!("not a time: {}", quote(raw));
    if s.len() < 19 || !s.is_char_boundary(19) {
        return Err(err());
    }
    let (main, rest) = s.split_at(19);
    let date_time = match plain_date_time(main.as_bytes()) {
        Some(t) => t,
        None => {
            let main = main.replacen(' ', "T", 1);
            NaiveDateTime::parse_from_str(&main, "%Y-%m-%dT%H:%M:%S").map_err(|_| err())?
        }
    };

    // Fractions of a second, then the offset.
    let frac_len = rest
        .strip_prefix(['.', ','])
        .map(|r| r.bytes().take_while(u8::is_ascii_digit).count())
        .unwrap_or(0);
    let (frac, offset) = if frac_len > 0 {
        (&rest[1..=frac_len], &rest[1 + frac_len..])
    } else if rest.starts_with(['.', ',']) {
        return Err(err());
    } else {
        ("", rest)
    };
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        // PostgreSQL keeps microseconds: further digits are dropped here, so that a time
        // reads back from the database exactly as it was read.
        let digits = frac.bytes().chain(std::iter::repeat(b'0')).take(6);
        digits.fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) * 1000
    };
    let date_time = date_time.with_nanosecond_checked(nanos).ok_or_else(err)?;

    let offset = parse_offset(offset.trim()).ok_or_else(err)?;
    let t = offset
        .from_local_datetime(&date_time)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(err)?;
    in_range(t, raw)
}

/// `YYYY-MM-DDTHH:MM:SS` (or a space for the `T`), every field in range: what nearly every
/// payload sends, read without chrono's format-string machinery (a tenth of the time it
/// took per request). Anything else is left to chrono, which reads these the same way.
fn plain_date_time(b: &[u8]) -> Option<NaiveDateTime> {
    let num = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)
}

/// Years 1 to 9999: what both RFC 3339 and PostgreSQL read back (PostgreSQL has no year 0).
fn in_range(t: DateTime<Utc>, raw: &str) -> Result<DateTime<Utc>, String> {
    if (1..=9999).contains(&chrono::Datelike::year(&t)) {
        Ok(t)
    } else {
        Err(format!(
            "time out of range (years 1 to 9999): {}",
            quote(raw)
        ))
    }
}

trait WithNanos: Sized {
    fn with_nanosecond_checked(self, nanos: u32) -> Option<Self>;
}

impl WithNanos for NaiveDateTime {
    fn with_nanosecond_checked(self, nanos: u32) -> Option<Self> {
        let time = NaiveTime::from_hms_nano_opt(
            chrono::Timelike::hour(&self),
            chrono::Timelike::minute(&self),
            chrono::Timelike::second(&self),
            nanos,
        )?;
        Some(NaiveDateTime::new(self.date(), time))
    }
}

/// `""` (UTC), `Z`, `UTC`, `+HH`, `+HHMM`, `+HH:MM` and the same with `-`.
fn parse_offset(s: &str) -> Option<FixedOffset> {
    if s.is_empty() || s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") {
        return FixedOffset::east_opt(0);
    }
    let sign = match s.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = s[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || s[1..].matches(':').count() > 1 {
        return None;
    }
    let (hours, minutes) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// Reads a time sent as a JSON number: seconds since 1970, or milliseconds when the number
/// is too large to be seconds of a plausible date.
pub fn time_from_epoch(raw: &str) -> Result<DateTime<Utc>, String> {
    let err = || format!("not a time: {}", quote(raw));
    let n: i64 = raw.trim().parse().map_err(|_| err())?;
    let t = if n.unsigned_abs() >= 100_000_000_000 {
        Utc.timestamp_millis_opt(n).single()
    } else {
        Utc.timestamp_opt(n, 0).single()
    };
    in_range(t.ok_or_else(err)?, raw)
}

/// Reads a duration in whole seconds: `MM:SS` (minutes may exceed 59), `HH:MM:SS`, or a
/// number of seconds (a fraction is rounded to the nearest second).
pub fn parse_duration(raw: &str) -> Result<i32, String> {
    let s = raw.trim();
    let err = || format!("not a duration: {}", quote(raw));
    if !s.contains(':') {
        return parse_whole(s, true).map_err(|_| err());
    }
    let parts: Vec<&str> = s.split(':').collect();
    let nums: Vec<i64> = parts
        .iter()
        .map(|p| {
            let p = p.trim();
            if p.is_empty() || p.len() > 12 || !p.bytes().all(|b| b.is_ascii_digit()) {
                Err(err())
            } else {
                p.parse::<i64>().map_err(|_| err())
            }
        })
        .collect::<Result<_, _>>()?;
    let total = match nums[..] {
        [m, sec] if sec < 60 => m * 60 + sec,
        [h, m, sec] if m < 60 && sec < 60 => h * 3600 + m * 60 + sec,
        _ => return Err(err()),
    };
    i32::try_from(total).map_err(|_| format!("duration out of range: {}", quote(raw)))
}

/// Reads a whole number (an `integer` column); `9`, `"9"` and `"9.0"` are 9. With `round`,
/// a fraction is rounded; without it, a fraction is an error.
pub fn parse_whole(raw: &str, round: bool) -> Result<i32, String> {
    let s = raw.trim();
    let err = || format!("not a whole number: {}", quote(raw));
    let d = parse_decimal(s).map_err(|_| err())?;
    let d = if round {
        d.round()
    } else if d.fract().is_zero() {
        d
    } else {
        return Err(err());
    };
    if d.is_sign_negative() && !d.is_zero() {
        return Err(format!("negative: {}", quote(raw)));
    }
    i32::try_from(d.trunc().mantissa() / 10i128.pow(d.trunc().scale()))
        .map_err(|_| format!("out of range: {}", quote(raw)))
}

/// Reads an exact decimal number (money): `"0.040"`, `0.04`, `1e-3`. Never through a float.
pub fn parse_decimal(raw: &str) -> Result<Decimal, String> {
    let s = raw.trim();
    let err = || format!("not a decimal number: {}", quote(raw));
    let plain = s.strip_prefix('+').unwrap_or(s);
    if plain.is_empty()
        || !plain
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'e' | b'E' | b'+'))
    {
        return Err(err());
    }
    if plain.contains(['e', 'E']) {
        return Decimal::from_scientific(plain).map_err(|_| err());
    }
    Decimal::from_str_exact(plain).or_else(|e| {
        if plain.bytes().filter(|b| b.is_ascii_digit()).count() > 28 {
            // More digits than an exact 96-bit decimal holds.
            Err(format!("decimal number out of range: {}: {e}", quote(raw)))
        } else {
            Decimal::from_str(plain).map_err(|_| err())
        }
    })
}

/// Reads a boolean sent as a string: `true`/`false`, `yes`/`no`, `1`/`0`, any case.
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "t" | "y" => Ok(true),
        "false" | "no" | "0" | "f" | "n" => Ok(false),
        _ => Err(format!("not a boolean: {}", quote(raw))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> String {
        parse_time(s)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// The fast reading of the date and time agrees with chrono's wherever it answers.
    #[test]
    fn plain_date_time_reads_as_chrono_does() {
        let samples = [
            "2020-05-12T00:53:57",
            "2020-05-12 00:53:57",
            "2024-02-29T23:59:59",
            "2023-02-29T10:00:00",
            "2020-13-01T00:00:00",
            "2020-00-10T00:00:00",
            "2020-01-32T00:00:00",
            "2020-01-01T24:00:00",
            "2020-01-01T23:60:00",
            "2020-01-01T23:59:60",
            "0000-01-01T00:00:00",
            "9999-12-31T23:59:59",
            "2020-1-012T00:00:00",
            "2020/01/01T00:00:00",
            "2020-01-01t00:00:00",
            "+020-01-01T00:00:00",
            "2020-01-01T0a:00:00",
            "2020-01-01T00:00: 1",
        ];
        for sample in samples {
            let chrono =
                NaiveDateTime::parse_from_str(&sample.replacen(' ', "T", 1), "%Y-%m-%dT%H:%M:%S")
                    .ok();
            // When not read here, it is left to chrono (leap seconds, signs, odd widths).
            if let Some(fast) = plain_date_time(sample.as_bytes()) {
                assert_eq!(Some(fast), chrono, "{sample}");
            }
        }
        assert!(plain_date_time(b"2020-05-12T00:53:57").is_some());
        assert!(plain_date_time(b"2020-05-12 00:53:57").is_some());
        assert!(plain_date_time(b"2023-02-29T10:00:00").is_none());
    }

    #[test]
    fn times_in_every_vendor_format() {
        assert_eq!(
            t("2020-05-12T00:53:57.688+0000"),
            "2020-05-12T00:53:57.688Z"
        );
        assert_eq!(t("2025-06-23T13:13:50.000Z"), "2025-06-23T13:13:50.000Z");
        assert_eq!(t("2025-06-23T13:13:50Z"), "2025-06-23T13:13:50.000Z");
        assert_eq!(t("2025-06-23T13:13:50+05:30"), "2025-06-23T07:43:50.000Z");
        assert_eq!(t("2025-06-23T13:13:50.5-0130"), "2025-06-23T14:43:50.500Z");
        assert_eq!(t("2025-06-23T13:13:50+05"), "2025-06-23T08:13:50.000Z");
        assert_eq!(t(" 2025-06-23 13:13:50 "), "2025-06-23T13:13:50.000Z");
        assert_eq!(
            t("2025-06-23T13:13:50.123456789123"),
            "2025-06-23T13:13:50.123Z"
        );
        assert_eq!(
            parse_time("2025-06-23T13:13:50.123456789Z")
                .unwrap()
                .timestamp_subsec_nanos(),
            123_456_000
        );
        assert_eq!(t("2025-06-23T13:13:50"), "2025-06-23T13:13:50.000Z");
    }

    #[test]
    fn bad_times_say_what_they_got() {
        for bad in [
            "",
            "yesterday",
            "2025-13-23T13:13:50Z",
            "2025-06-23T13:13:50+2500",
            "2025-06-23T13:13:50.Z",
            "2025-06-23T13:13:50 garbage",
            "2025-06-23",
            "2025-06-23T13:13:5é",
        ] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.starts_with("not a time: "), "{bad}: {e}");
        }
        for outside in ["0000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00"] {
            let e = parse_time(outside).unwrap_err();
            assert!(e.contains("out of range"), "{outside}: {e}");
        }
        assert!(parse_time("0001-01-01T00:00:00Z").is_ok());
        assert!(parse_time("9999-12-31T23:59:59Z").is_ok());
    }

    #[test]
    fn epoch_times() {
        assert_eq!(
            time_from_epoch("1589244837").unwrap().to_rfc3339(),
            "2020-05-12T00:53:57+00:00"
        );
        assert_eq!(
            time_from_epoch("1589244837688").unwrap().timestamp_millis(),
            1589244837688
        );
        assert!(time_from_epoch("1.5").is_err());
        assert!(time_from_epoch(&i64::MIN.to_string()).is_err());
        assert!(time_from_epoch("-99999999999999")
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("08:10"), Ok(490));
        assert_eq!(parse_duration("00:02"), Ok(2));
        assert_eq!(parse_duration("125:30"), Ok(7530));
        assert_eq!(parse_duration("1:02:03"), Ok(3723));
        assert_eq!(parse_duration("490"), Ok(490));
        assert_eq!(parse_duration(" 12.6 "), Ok(13));
        assert_eq!(parse_duration("0"), Ok(0));
        for bad in [
            "", "abc", "1:60", "1:60:00", "1:2:3:4", ":10", "-5", "-1:10", "1e99",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("99999999:00")
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn whole_numbers() {
        assert_eq!(parse_whole("9", false), Ok(9));
        assert_eq!(parse_whole(" 9.0 ", false), Ok(9));
        assert_eq!(parse_whole("1.5", true), Ok(2));
        assert!(parse_whole("1.5", false)
            .unwrap_err()
            .contains("not a whole number"));
        assert!(parse_whole("-3", false).unwrap_err().contains("negative"));
        assert!(parse_whole("3000000000", false)
            .unwrap_err()
            .contains("out of range"));
        assert!(parse_whole("nine", false).is_err());
    }

    #[test]
    fn money_is_exact() {
        assert_eq!(parse_decimal("0.040").unwrap().to_string(), "0.040");
        assert_eq!(parse_decimal("0.1").unwrap().to_string(), "0.1");
        assert_eq!(parse_decimal("+12").unwrap().to_string(), "12");
        assert_eq!(parse_decimal("-0.5").unwrap().to_string(), "-0.5");
        assert_eq!(parse_decimal("1e-3").unwrap().to_string(), "0.001");
        assert_eq!(
            parse_decimal("N/A").unwrap_err(),
            r#"not a decimal number: "N/A""#
        );
        assert!(parse_decimal("").is_err());
        assert!(parse_decimal("0,04").is_err());
        assert!(parse_decimal("1.2.3").is_err());
        assert!(parse_decimal("123456789012345678901234567890123")
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool(" FALSE "), Ok(false));
        assert_eq!(parse_bool("1"), Ok(true));
        assert!(parse_bool("maybe").is_err());
    }

    #[test]
    fn enums() {
        assert_eq!(normalize_enum("No Answer"), "no_answer");
        assert_eq!(normalize_enum("no-answer"), "no_answer");
        assert_eq!(normalize_enum(" Welcome  message "), "welcome_message");
        assert_eq!(normalize_enum("IVR message"), "ivr_message");
        assert_eq!(normalize_enum("canceled"), "cancelled");
        assert_eq!(normalize_enum("Canceled"), "cancelled");
        assert_eq!(normalize_enum("Completed"), "completed");
        assert_eq!(normalize_enum("some_new - value"), "some_new_value");
    }

    #[test]
    fn quote_cuts_long_values() {
        let q = quote(&"x".repeat(500));
        assert!(q.len() < 80, "{q}");
    }
}
