#![allow(dead_code, unused_variables)]
use crate::config::Config;
use crate::spool::*;
use std::time::SystemTime;
#[derive(Clone, Copy)]
pub enum Action {
    Failed,
    Delayed,
}
pub struct RecipientReport {
    pub recipient: String,
    pub status: String,
    pub remote_mta: Option<String>,
    pub diagnostic: Option<String>,
    pub last_attempt: Option<u64>,
}
pub fn wanted(original: &Envelope, action: Action) -> bool {
    todo!()
}
pub fn send(
    spool: &Spool,
    config: &Config,
    original: &Envelope,
    original_data: MessageData,
    action: Action,
    reports: &[RecipientReport],
    now: SystemTime,
) -> crate::error::Result<Option<QueueId>> {
    todo!()
}
