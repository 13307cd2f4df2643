//! callhippo-ingest: CallHippo webhooks into normalized PostgreSQL tables.
//!
//! Data flows one way: bytes -> [`payload`] (pure reader) -> [`delivery`] of [`event`]s
//! (the domain) -> [`ingest`] (batching, the spool) -> a [`sink::Sink`] ([`store`]:
//! PostgreSQL). [`http`] only decides answers.

pub mod backfill;
pub mod callhippo_api;
pub mod config;
pub mod console;
pub mod delivery;
pub mod erasure;
pub mod event;
pub mod forget;
pub mod healthcheck;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod payload;
pub mod reconcile;
pub mod replay;
pub mod retry;
pub mod rollup;
pub mod sink;
pub mod spool;
pub mod startup;
pub mod store;
pub mod telemetry;
