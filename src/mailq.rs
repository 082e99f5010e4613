//! The mailq face.
//! STUB: replaced by the spool helper.
