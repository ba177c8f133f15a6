//! RFC 3339 timestamps with nanoseconds, as docker's json-file log and
//! inspect print them. By hand: one format, and the shim stays free of a
//! date crate (its memory per container is the point).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as "2026-11-23T01:02:03.123456789Z".
pub fn now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format_nanos(d.as_secs(), d.subsec_nanos())
}

pub fn format_nanos(secs: u64, nanos: u32) -> String {
    let s = format_secs(secs);
    format!("{}.{nanos:09}Z", &s[..s.len() - 1])
}

/// Seconds since the epoch as "2026-11-23T01:02:03Z".
pub fn format_secs(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_docker() {
        assert_eq!(super::format_nanos(0, 5), "1970-01-01T00:00:00.000000005Z");
        assert_eq!(super::format_nanos(1_795_395_723, 123_000_000), "2026-11-23T01:02:03.123000000Z");
    }
}
