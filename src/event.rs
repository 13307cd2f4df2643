//! The domain: what one webhook delivery means once it has been read.
//!
//! `payload` turns bytes into these types; `store` writes them. Neither the vendor's JSON
//! field names (beyond the warning keys, which name the payload field on purpose) nor SQL
//! appear here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

/// The kind of a delivery, as stored in `raw_events.kind` and used as the `kind` label of
/// the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Call,
    Sms,
    CallStatus,
    Test,
    Unknown,
    Invalid,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Call,
        Kind::Sms,
        Kind::CallStatus,
        Kind::Test,
        Kind::Unknown,
        Kind::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::Sms => "sms",
            Kind::CallStatus => "call_status",
            Kind::Test => "test",
            Kind::Unknown => "unknown",
            Kind::Invalid => "invalid",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Payload field -> what was wrong with it. Ordered, so that equal inputs give equal JSON.
pub type Warnings = BTreeMap<String, String>;

/// One call log (`calls` row plus its tags). Serialized, it is the row the store writes:
/// tags and warnings go their own ways.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    pub call_sid: String,
    pub call_type: Option<String>,
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    pub dial_code: Option<String>,
    pub country_name: Option<String>,
    pub status: Option<String>,
    pub status_reason: Option<String>,
    pub duration_seconds: Option<i32>,
    pub ring_seconds: Option<i32>,
    pub billed_minutes: Option<i32>,
    pub call_charge: Option<Decimal>,
    pub logged_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub agent_email: Option<String>,
    pub agent_name: Option<String>,
    pub admin_email: Option<String>,
    pub note: Option<String>,
    pub recording_url: Option<String>,
    pub answered_device: Option<String>,
    pub hangup_by: Option<String>,
    pub call_queue: Option<bool>,
    pub reason: Option<String>,
    pub dispositions: Option<Vec<String>>,
    /// `extraParams` of newer payloads.
    pub agent_id: Option<String>,
    pub campaign_id: Option<String>,
    pub crm_unique_id: Option<String>,
    pub virtual_number: Option<String>,
    /// When the call was answered: CallHippo's API gives it, webhooks do not.
    pub answered_at: Option<DateTime<Utc>>,
    /// CallHippo's record id in its API (`_id`).
    pub api_id: Option<String>,
    /// Trimmed, non-empty, first spelling of each name kept, in payload order.
    #[serde(skip)]
    pub tags: Vec<String>,
    #[serde(skip)]
    pub warnings: Warnings,
}

/// One SMS log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmsRecord {
    /// Derived from from, to, type, time and content: the vendor gives an SMS no id.
    pub sms_key: String,
    pub sms_type: Option<String>,
    pub from_number: String,
    pub to_number: String,
    pub status: Option<String>,
    pub content: Option<String>,
    pub logged_at: DateTime<Utc>,
    pub sms_charge: Option<Decimal>,
    pub agent_email: Option<String>,
    pub agent_name: Option<String>,
    pub admin_email: Option<String>,
    #[serde(skip)]
    pub warnings: Warnings,
}

/// One call status notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallStatusRecord {
    pub call_sid: String,
    pub status: String,
    pub occurred_at: DateTime<Utc>,
    pub call_type: Option<String>,
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    pub agent_email: Option<String>,
    pub agent_id: Option<String>,
    pub dial_code: Option<String>,
    #[serde(skip)]
    pub warnings: Warnings,
}

/// A readable event of a kind that has its own table.
// A call is larger than the others, but each event is moved only a few times on its way to
// the database: boxing would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Call(CallRecord),
    Sms(SmsRecord),
    CallStatus(CallStatusRecord),
}

impl Record {
    pub fn kind(&self) -> Kind {
        match self {
            Record::Call(_) => Kind::Call,
            Record::Sms(_) => Kind::Sms,
            Record::CallStatus(_) => Kind::CallStatus,
        }
    }

    /// The idempotency key, as shown in answers and logs.
    pub fn key(&self) -> String {
        match self {
            Record::Call(c) => c.call_sid.clone(),
            Record::Sms(s) => s.sms_key.clone(),
            Record::CallStatus(s) => {
                format!("{}/{}/{}", s.call_sid, s.status, s.occurred_at.to_rfc3339())
            }
        }
    }

    /// When the event happened: a call's start (else its log time), an SMS's time, a
    /// status event's time. Retention goes by it.
    pub fn event_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Record::Call(c) => c.started_at.or(c.logged_at),
            Record::Sms(s) => Some(s.logged_at),
            Record::CallStatus(s) => Some(s.occurred_at),
        }
    }

    pub fn warnings(&self) -> &Warnings {
        match self {
            Record::Call(c) => &c.warnings,
            Record::Sms(s) => &s.warnings,
            Record::CallStatus(s) => &s.warnings,
        }
    }
}

/// What reading a body gave, before anything was written.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A call, SMS or status event to write to its table.
    Record(Record),
    /// The vendor's connection test: kept in `raw_events` only.
    Test,
    /// Valid JSON of a kind the service does not know: kept in `raw_events` only.
    Unknown,
    /// Refused; `raw_events` keeps it with `error`.
    Rejected(Rejection),
}

impl Reading {
    pub fn kind(&self) -> Kind {
        match self {
            Reading::Record(r) => r.kind(),
            Reading::Test => Kind::Test,
            Reading::Unknown => Kind::Unknown,
            Reading::Rejected(r) => r.kind,
        }
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `invalid` for a body that is not a JSON object, else the kind it was read as.
    pub kind: Kind,
    /// The payload field at fault, when one is (a missing key field).
    pub field: Option<String>,
    pub message: String,
}

impl Rejection {
    /// 400 for a body that is not a JSON object, 422 for a known kind missing its key.
    pub fn http_status(&self) -> u16 {
        if self.kind == Kind::Invalid {
            400
        } else {
            422
        }
    }
}
