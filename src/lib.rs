//! callhippo-ingest: CallHippo webhooks into normalized PostgreSQL tables.
//!
//! Data flows one way: bytes -> [`payload`] (pure reader) -> [`event`] (the domain) ->
//! [`ingest`] (batching) -> [`store`] (PostgreSQL). [`http`] only decides answers.

pub mod config;
pub mod event;
pub mod healthcheck;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod payload;
pub mod replay;
pub mod spool;
pub mod startup;
pub mod store;
pub mod telemetry;
