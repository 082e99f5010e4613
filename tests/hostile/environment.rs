//! (filled by the work on issue 15)
