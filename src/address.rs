//! RFC 5321 address parsing and validation.
//! STUB: replaced by the message helper.
