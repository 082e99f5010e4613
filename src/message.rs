//! Reading a message from stdin.
//! STUB: replaced by the message helper.
