//! Protocol time (milliseconds since the Unix epoch, always an input) shown to people.

/// `ms` as an ISO-8601 UTC time with millisecond precision when it has any:
/// `2026-11-21T00:10:00Z`, `2026-11-21T00:10:00.250Z`.
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant, "chrono-Compatible Low-Level
    // Date Algorithms"), in unsigned arithmetic: the epoch is after 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s) = (rem / 3_600, rem % 3_600 / 60, rem % 60);
    match ms % 1_000 {
        0 => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
        frac => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{frac:03}Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::iso8601;

    #[test]
    fn known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_795_219_200_000), "2026-11-21T00:00:00Z");
        assert_eq!(iso8601(1_795_219_800_250), "2026-11-21T00:10:00.250Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(4_107_542_399_000), "2100-02-28T23:59:59Z");
        assert_eq!(iso8601(4_107_542_400_000), "2100-03-01T00:00:00Z");
    }
}
