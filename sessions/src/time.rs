//! Minimal UTC calendar conversion (no external time crate).
//!
//! Converts [`SystemTime`] into a proleptic-Gregorian UTC date and time using the
//! days-to-civil algorithm by Howard Hinnant. Leap seconds are not represented (as in Unix time).

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC calendar date and time with one-second resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UtcDateTime {
    /// Year (proleptic Gregorian; may be < 1970 for times before the epoch).
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=59.
    pub second: u32,
}

impl UtcDateTime {
    /// Converts seconds since the Unix epoch (may be negative) to a UTC date and time.
    pub fn from_unix_seconds(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        // sod is in 0..86400, so these casts cannot truncate.
        UtcDateTime {
            year,
            month,
            day,
            hour: (sod / 3600) as u32,
            minute: ((sod % 3600) / 60) as u32,
            second: (sod % 60) as u32,
        }
    }

    /// Converts a [`SystemTime`] (sub-second part truncated towards the past).
    pub fn from_system_time(t: SystemTime) -> Self {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
            Err(e) => {
                let d = e.duration();
                let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
                if d.subsec_nanos() > 0 {
                    -whole - 1
                } else {
                    -whole
                }
            }
        };
        Self::from_unix_seconds(secs)
    }

    /// The current UTC time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// RFC 3339 form, e.g. `2026-11-21T05:51:47Z`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// Compact form used in session directory names, e.g. `20261121-055147`.
    pub fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Inverse (days_from_civil) used to cross-check the conversion.
    fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(m);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        let t = UtcDateTime::from_unix_seconds(1_700_000_000);
        assert_eq!(t.rfc3339(), "2023-11-14T22:13:20Z");
        assert_eq!(t.compact(), "20231114-221320");
        let t = UtcDateTime::from_unix_seconds(951_868_799); // last second of 2000-02-29
        assert_eq!(t.rfc3339(), "2000-02-29T23:59:59Z");
        let t = UtcDateTime::from_unix_seconds(-1);
        assert_eq!(t.rfc3339(), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn round_trips_over_wide_range() {
        let mut prev = None;
        for days in (-800_000..800_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days, "day {days} -> {y}-{m}-{d}");
            if let Some(p) = prev {
                assert!((y, m, d) > p, "dates must increase");
            }
            prev = Some((y, m, d));
        }
    }

    #[test]
    fn system_time_before_epoch_rounds_down() {
        let t = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(
            UtcDateTime::from_system_time(t).rfc3339(),
            "1969-12-31T23:59:59Z"
        );
        let t = UNIX_EPOCH + Duration::from_millis(86_400_999);
        assert_eq!(
            UtcDateTime::from_system_time(t).rfc3339(),
            "1970-01-02T00:00:00Z"
        );
    }
}
