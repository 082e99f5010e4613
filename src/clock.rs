//! Time as the project reads and writes it: "now" and every date format.
//!
//! Every date spoolmail writes is formatted here, by hand, from one table
//! of English day and month names: the caller's locale (a setgid binary
//! runs under whatever `LC_TIME` its caller chose) cannot change a byte
//! of a header, an mbox separator or a listing. "Now" is unix seconds,
//! with a time before the epoch (a badly wrong clock) counted as 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// Day names, Sunday first (`tm_wday`'s order).
const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
/// Month names, January first (`tm_mon`'s order).
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// 1970-01-01 was a Thursday: [`DAYS`]'s index of the epoch's day.
const EPOCH_WEEKDAY: u64 = 4;

/// `t` in whole unix seconds; 0 for a time before the epoch.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    unix_seconds(SystemTime::now())
}

/// `Mon Nov 23 06:50` in local time (the `mailq` listing's arrival
/// time, as sendmail shows it); `?` if the time cannot be converted.
pub fn local_time(unix: u64) -> String {
    let t = libc::time_t::try_from(unix).unwrap_or(libc::time_t::MAX);
    // SAFETY: an all-zero tm is a valid value for localtime_r to fill.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return "?".to_owned();
    }
    let (Some(day), Some(month)) = (name(&DAYS, tm.tm_wday), name(&MONTHS, tm.tm_mon)) else {
        return "?".to_owned();
    };
    format!(
        "{day} {month} {:>2} {:02}:{:02}",
        tm.tm_mday, tm.tm_hour, tm.tm_min
    )
}

/// `Mon, 23 Nov 2026 06:50:03 +0100`: an RFC 5322 date-time in local
/// time (with its offset from UTC), for `Date:`, `Received:` and the
/// dates of a delivery status notification. Falls back to UTC if the
/// local time cannot be computed; never fails, even before the epoch.
pub fn rfc5322(now: SystemTime) -> String {
    let secs = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let t = libc::time_t::try_from(secs).unwrap_or(0);
    let tm = broken_down_time(t);
    let day = name(&DAYS, tm.tm_wday).unwrap_or("Thu");
    let month = name(&MONTHS, tm.tm_mon).unwrap_or("Jan");
    // tm_gmtoff is a C long: i64 here, i32 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let offset = i64::from(tm.tm_gmtoff);
    let sign = if offset < 0 { '-' } else { '+' };
    let offset = offset.unsigned_abs();
    format!(
        "{day}, {} {month} {} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        tm.tm_mday,
        i64::from(tm.tm_year) + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        offset / 3600,
        offset % 3600 / 60,
    )
}

/// `Tue Nov 24 03:33:13 2026`, in UTC (C's `asctime` shape): the date of
/// an mbox `From ` separator line. Computed without libc, so the result
/// depends on `now` alone.
pub fn asctime_utc(now: SystemTime) -> String {
    let secs = unix_seconds(now);
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[((days + EPOCH_WEEKDAY) % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        year
    )
}

/// The name at a `tm` field's index, if it is one.
fn name(table: &[&'static str], index: libc::c_int) -> Option<&'static str> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .copied()
}

/// Local time for `t`, or UTC, or the epoch in UTC: never a failure.
fn broken_down_time(t: libc::time_t) -> libc::tm {
    // SAFETY: `tm` is plain old data, so all-zero is a valid value;
    // localtime_r and gmtime_r only write into the `tm` we pass and read
    // `t`, both valid for the duration of the call (the _r variants are
    // the thread-safe ones).
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if !libc::localtime_r(&t, &mut tm).is_null() {
            return tm;
        }
        if !libc::gmtime_r(&t, &mut tm).is_null() {
            return tm;
        }
        let epoch: libc::time_t = 0;
        libc::gmtime_r(&epoch, &mut tm);
        tm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unix_seconds_counts_from_the_epoch_and_never_below() {
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_millis(1_999)), 1);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert!(unix_now() > 1_700_000_000);
    }

    #[test]
    fn local_time_has_the_sendmail_shape() {
        let t = local_time(1_700_000_000);
        assert_eq!(t.len(), 16, "{t:?}");
        assert_eq!(&t[3..4], " ");
        assert_eq!(&t[13..14], ":");
    }

    #[test]
    fn rfc5322_has_the_date_time_shape() {
        let when = UNIX_EPOCH + Duration::from_secs(1_795_413_003);
        let text = rfc5322(when);
        let parts: Vec<&str> = text.split(' ').collect();
        assert_eq!(parts.len(), 6, "{text}");
        assert!(["Sun,", "Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,"].contains(&parts[0]));
        assert!(parts[1].parse::<u8>().is_ok_and(|d| (1..=31).contains(&d)));
        assert_eq!(parts[2], "Nov");
        assert_eq!(parts[3], "2026");
        assert_eq!(parts[4].len(), 8);
        assert!(parts[5].len() == 5 && (parts[5].starts_with('+') || parts[5].starts_with('-')));
        // Never fails, even before the epoch.
        assert!(!rfc5322(UNIX_EPOCH - Duration::from_secs(86_400)).is_empty());
    }

    #[test]
    fn asctime_utc_is_the_mbox_separator_date() {
        // Tue Nov 24 2026 03:33:13 UTC
        let at = UNIX_EPOCH + Duration::from_secs(1_795_491_193);
        assert_eq!(asctime_utc(at), "Tue Nov 24 03:33:13 2026");
        assert_eq!(asctime_utc(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
        // 2000-02-29 12:00:00 UTC, a leap day of a century leap year.
        let leap = UNIX_EPOCH + Duration::from_secs(951_825_600);
        assert_eq!(asctime_utc(leap), "Tue Feb 29 12:00:00 2000");
    }
}
