//! Time as the project reads and writes it: "now" and every date format.

/// `Mon Nov 23 06:50` in local time, formatted by hand so that the
/// locale cannot change it; `?` if the time cannot be converted.
pub fn local_time(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = libc::time_t::try_from(unix).unwrap_or(libc::time_t::MAX);
    // SAFETY: an all-zero tm is a valid value for localtime_r to fill.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return "?".to_owned();
    }
    let (Some(day), Some(month)) = (
        usize::try_from(tm.tm_wday).ok().and_then(|d| DAYS.get(d)),
        usize::try_from(tm.tm_mon).ok().and_then(|m| MONTHS.get(m)),
    ) else {
        return "?".to_owned();
    };
    format!(
        "{day} {month} {:>2} {:02}:{:02}",
        tm.tm_mday, tm.tm_hour, tm.tm_min
    )
}
