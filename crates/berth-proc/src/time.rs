//! RFC 3339 timestamps in UTC, in the three shapes berth writes, all
//! through chrono, in one place:
//!
//! - [`now`], [`format_nanos`]: nine fraction digits always, as docker's
//!   json-file log and `inspect` print them (the shim, the engine);
//! - [`format_go`]: Go's RFC3339Nano, trailing zeros trimmed, as runc
//!   writes `created` in its state (the runtime);
//! - [`now_secs`], [`format_secs`]: whole seconds (volumes' CreatedAt,
//!   the runtime's log lines).

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, as "2026-11-23T01:02:03.123456789Z".
pub fn now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format_nanos(d.as_secs(), d.subsec_nanos())
}

/// Now, as "2026-11-23T01:02:03Z".
pub fn now_secs() -> String {
    format_secs(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
}

/// Seconds and nanoseconds since the epoch as
/// "2026-11-23T01:02:03.123456789Z".
pub fn format_nanos(secs: u64, nanos: u32) -> String {
    utc(secs, nanos).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Seconds since the epoch as "2026-11-23T01:02:03Z".
pub fn format_secs(secs: u64) -> String {
    utc(secs, 0).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// As Go (and so runc) writes a time.Time: "2026-11-23T19:40:55.751764629Z",
/// "2026-11-23T19:40:55.5Z", "2026-11-23T19:40:55Z".
pub fn format_go(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let full = format_nanos(d.as_secs(), d.subsec_nanos());
    let Some((base, frac)) = full.trim_end_matches('Z').split_once('.') else { return full };
    match frac.trim_end_matches('0') {
        "" => format!("{base}Z"),
        frac => format!("{base}.{frac}Z"),
    }
}

fn utc(secs: u64, nanos: u32) -> DateTime<Utc> {
    // Out of chrono's range (year 262143) only for a corrupt clock.
    i64::try_from(secs).ok().and_then(|s| DateTime::from_timestamp(s, nanos)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn formats_like_docker() {
        assert_eq!(format_nanos(0, 5), "1970-01-01T00:00:00.000000005Z");
        assert_eq!(format_nanos(1_795_395_723, 123_000_000), "2026-11-23T01:02:03.123000000Z");
        assert_eq!(format_secs(1_795_395_723), "2026-11-23T01:02:03Z");
        assert_eq!(format_secs(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn formats_like_go() {
        let t = UNIX_EPOCH + Duration::new(1_795_463_255, 751_764_629);
        assert_eq!(format_go(t), "2026-11-23T19:47:35.751764629Z");
        let t = UNIX_EPOCH + Duration::new(1_795_463_255, 500_000_000);
        assert_eq!(format_go(t), "2026-11-23T19:47:35.5Z");
        let t = UNIX_EPOCH + Duration::new(1_795_463_255, 0);
        assert_eq!(format_go(t), "2026-11-23T19:47:35Z");
    }
}
