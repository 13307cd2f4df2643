//! Integration tests: the real server, through real HTTP, against real PostgreSQL.
//! One binary; modules are named after what they exercise.

mod backfill;
mod cli;
mod console;
mod failover;
mod fake_api;
mod hardening;
mod helpers;
mod idempotency;
mod metrics;
mod operations;
mod outage;
mod personal_data;
mod pooler;
mod schema;
mod summaries;
mod views;
mod webhook;
