//! The spool.
//! STUB: replaced by the spool helper.
