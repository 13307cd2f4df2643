//! A delivery on its way to the tables: the body as received, what it was read as, where it
//! came from, and, once written, what became of it. Shared by the sources (HTTP, the spool,
//! `replay`), the batching in between and the store.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::event::{Kind, Reading};

/// Where a delivery came from. Every source's events take the same path to the tables; the
/// source says how a record meets a row that is already there ([`MergeRule`]) and which
/// counters it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Posted to the webhook and written at once.
    Webhook,
    /// Posted to the webhook while the database was away, written from the spool later.
    Spool,
    /// Read again from `raw_events` by `replay`: the archived row's id, and whether it was
    /// read from CallHippo's API in the first place.
    Replay { raw_id: i64, from_api: bool },
    /// A record read from CallHippo's API (backfill, reconciliation).
    Api,
}

/// How a record meets the row of its key when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeRule {
    /// The row holds the newest delivery's values: a delivery older than the one that last
    /// changed the row leaves it alone (see docs/reference.md §5).
    NewestDelivery,
    /// The record only fills the row's empty columns: a row the webhooks wrote keeps every
    /// value it has, and one the API wrote first is completed by its webhook later.
    FillEmpty,
}

impl Source {
    /// As `raw_events.source` (and the tables' `source`) says it.
    pub fn archived_as(self) -> &'static str {
        match self {
            Source::Api | Source::Replay { from_api: true, .. } => "api",
            Source::Webhook | Source::Spool | Source::Replay { .. } => "webhook",
        }
    }

    pub fn merge_rule(self) -> MergeRule {
        match self {
            Source::Api | Source::Replay { from_api: true, .. } => MergeRule::FillEmpty,
            Source::Webhook | Source::Spool | Source::Replay { .. } => MergeRule::NewestDelivery,
        }
    }
}

/// One delivery to write.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub body: bytes::Bytes,
    pub decoded: Decoded,
    pub content_type: Option<String>,
    /// When it was delivered (live: now; from the spool: when it was spooled; replayed: the
    /// archived first and last delivery of its bytes).
    pub received: Times,
    pub source: Source,
}

/// A body as `raw_events` keeps it, with what it was read as.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// SHA-256 of the bytes as received: identical bytes make one `raw_events` row.
    pub sha256: [u8; 32],
    /// The JSON object (or the form's fields), made storable in `jsonb`, as JSON text for
    /// `raw_events.payload`; `None` when the body was not JSON. Printed from the parsed value
    /// (keys in jsonb's order), never the body itself. They may differ where PostgreSQL would
    /// refuse the body: a repeated key keeps only its last value here, while PostgreSQL reads
    /// (and rejects) a NUL or an out-of-range number in the earlier ones too. Printed here, on
    /// the request's thread, so that the batch writer only copies it.
    pub payload: Option<String>,
    /// The text as received, when `payload` alone does not give it back: the body was not
    /// JSON, or was JSON that had to be altered to fit `jsonb` (NUL characters, numbers
    /// beyond PostgreSQL's range).
    pub body: Option<String>,
    /// The exact bytes, only when `body` could not hold them (invalid UTF-8 or NUL bytes).
    pub body_bytes: Option<Vec<u8>>,
    pub reading: Reading,
}

impl Decoded {
    pub fn kind(&self) -> Kind {
        self.reading.kind()
    }

    /// The error kept in `raw_events.error`, when the body was refused.
    pub fn error(&self) -> Option<String> {
        match &self.reading {
            Reading::Rejected(r) => Some(r.message.clone()),
            _ => None,
        }
    }
}

/// What writing a delivery did (the `status` word of the answer, for the written ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Stored,
    Duplicate,
    Updated,
    Test,
    Archived,
    Rejected,
    /// About an erased identifier (`forget`): written nowhere.
    Suppressed,
}

impl Outcome {
    /// What writing a reading does when its row is new: `stored` for a record, and the
    /// final outcome of the readings that have no table.
    pub fn of_new(reading: &Reading) -> Outcome {
        match reading {
            Reading::Record(_) => Outcome::Stored,
            Reading::Test => Outcome::Test,
            Reading::Unknown => Outcome::Archived,
            Reading::Rejected(_) => Outcome::Rejected,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Updated => "updated",
            Outcome::Test => "test",
            Outcome::Archived => "archived",
            Outcome::Rejected => "rejected",
            Outcome::Suppressed => "suppressed",
        }
    }
}

/// When an event was first and last delivered. Live, both are the moment it arrived; a
/// replay passes the `raw_events` row's first and last delivery, so that rebuilt rows get
/// the times live ingestion gave them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

impl Times {
    pub fn at(t: DateTime<Utc>) -> Times {
        let t = micros(t);
        Times { first: t, last: t }
    }
}

/// PostgreSQL keeps microseconds, and rounds finer text input to the nearest one while a
/// bound value is truncated: every time the writer sends is cut to microseconds first, so
/// that comparisons with stored times are exact.
pub fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(t, 6)
}
