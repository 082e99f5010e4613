//! The queue as people see and act on it: `mailq` (the listing and its
//! JSON), `mailq --summary`, `mailq --metrics` (for Prometheus), and the
//! administrator's actions (hold, release, delete, requeue). These read
//! the spool and the runner's records; they never deliver. See
//! docs/architecture.md, "queue".

pub mod admin;
pub mod mailq;
pub mod metrics;
pub mod summary;
