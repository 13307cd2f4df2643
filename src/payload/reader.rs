//! A JSON object -> the event it describes (docs/reference.md §3 and §4).

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::fields::{normalize_enum, parse_decimal, parse_duration, parse_whole};
use super::record_fields::{Fields, Repeats};
use crate::event::{
    CallRecord, CallStatusRecord, Kind, Reading, Record, Rejection, SmsRecord, Warnings,
};

/// Every payload field the reader looks at.
pub const KNOWN_FIELDS: &[&str] = &[
    "activityType",
    "type",
    "callSid",
    "callType",
    "from",
    "to",
    "fromNumber",
    "toNumber",
    "dialCode",
    "countryName",
    "status",
    "statusReason",
    "duration",
    "durationSeconds",
    "ringAnswerDuration",
    "billedMinutes",
    "callCharge",
    "time",
    "startTime",
    "endTime",
    "email",
    "callerName",
    "adminEmail",
    "note",
    "recordingUrl",
    "answeredDevice",
    "hangupBy",
    "callQueue",
    "reason",
    "tags",
    "dispositions",
    "extraParams",
    "extraParams.agentId",
    "extraParams.campaignId",
    "extraParams.crmUniqueId",
    "extraParams.virtualNumber",
    "content",
    "smsType",
    "smsCharge",
    "smsSendBy",
    "agentEmail",
    "agentId",
    "dateTime",
];

/// The longest value kept in an indexed column (a B-tree entry holds about 2,700 bytes; no
/// real key, number, email or tag comes near this).
pub const MAX_INDEXED_BYTES: usize = 1000;

/// The number the vendor's "test connection" button sends the event to.
const TEST_NUMBER: &str = "+11111111111";

/// Reads one payload object. `altered_fields` names the top-level fields that had to be
/// changed to be storable (see `sanitize`); each gets a warning.
pub fn read_object(obj: &Map<String, Value>, altered_fields: &BTreeSet<String>) -> Reading {
    let mut f = Fields {
        obj,
        warnings: Warnings::new(),
    };
    for field in altered_fields {
        f.warn(
            field,
            "held a NUL character or a number beyond PostgreSQL's range: NULs removed, \
             such numbers kept as text"
                .to_owned(),
        );
    }

    if ["to", "toNumber"]
        .iter()
        .any(|k| matches!(obj.get(*k), Some(Value::String(s)) if s.trim() == TEST_NUMBER))
    {
        return Reading::Test;
    }

    let kind = match kind_word(obj).as_deref() {
        Some("call") => Kind::Call,
        Some("sms") => Kind::Sms,
        Some(_) => Kind::Unknown,
        None if obj.contains_key("callSid")
            && ["dateTime", "fromNumber", "agentId"]
                .iter()
                .any(|k| obj.contains_key(*k)) =>
        {
            Kind::CallStatus
        }
        None => Kind::Unknown,
    };
    let record = match kind {
        Kind::Call => read_call(&mut f).map(Record::Call),
        Kind::Sms => read_sms(&mut f).map(Record::Sms),
        Kind::CallStatus => read_status(&mut f).map(Record::CallStatus),
        _ => return Reading::Unknown,
    };
    match record {
        Ok(r) => Reading::Record(r),
        Err(rejection) => Reading::Rejected(rejection),
    }
}

/// `activityType` (older payloads) or `type` (newer ones): a non-empty string, trimmed,
/// lowercased.
fn kind_word(obj: &Map<String, Value>) -> Option<String> {
    ["activityType", "type"]
        .iter()
        .find_map(|k| match obj.get(*k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_lowercase()),
            _ => None,
        })
}

fn read_call(f: &mut Fields) -> Result<CallRecord, Rejection> {
    let call_sid = f.key_text("callSid", Kind::Call)?;
    // `durationSeconds` (newer payloads) wins over `duration` when it can be read.
    let duration_seconds = match f.get("durationSeconds") {
        Some(_) => f
            .parsed("durationSeconds", parse_duration)
            .or_else(|| f.parsed("duration", parse_duration)),
        None => f.parsed("duration", parse_duration),
    };
    Ok(CallRecord {
        call_sid,
        call_type: f.enumerated("callType"),
        from_number: f.indexed(|f| f.text_or("from", "fromNumber"), "from"),
        to_number: f.indexed(|f| f.text_or("to", "toNumber"), "to"),
        dial_code: f.text("dialCode"),
        country_name: f.text("countryName"),
        status: f.enumerated("status"),
        status_reason: f.text("statusReason"),
        duration_seconds,
        ring_seconds: f.parsed("ringAnswerDuration", parse_duration),
        billed_minutes: f.parsed("billedMinutes", |s| parse_whole(s, false)),
        call_charge: f.parsed("callCharge", parse_decimal),
        logged_at: f.time("time"),
        started_at: f.time("startTime"),
        ended_at: f.time("endTime"),
        agent_email: f.indexed(|f| f.email("email"), "email"),
        agent_name: f.text("callerName"),
        admin_email: f.email("adminEmail"),
        note: f.text("note"),
        recording_url: f.text("recordingUrl"),
        answered_device: f.enumerated("answeredDevice"),
        hangup_by: f.enumerated("hangupBy"),
        call_queue: f.boolean("callQueue"),
        reason: f.text("reason"),
        dispositions: f.list("dispositions", Repeats::Keep),
        agent_id: f.inner_text("extraParams", "agentId"),
        campaign_id: f.inner_text("extraParams", "campaignId"),
        crm_unique_id: f.inner_text("extraParams", "crmUniqueId"),
        virtual_number: f.inner_text("extraParams", "virtualNumber"),
        answered_at: None,
        api_id: None,
        // A call has a tag once (call_tags' key): repeats are dropped.
        tags: f.tag_names("tags"),
        warnings: std::mem::take(&mut f.warnings),
    })
}

fn read_sms(f: &mut Fields) -> Result<SmsRecord, Rejection> {
    let from_number = f.key_text_or("from", "fromNumber", Kind::Sms)?;
    let to_number = f.key_text_or("to", "toNumber", Kind::Sms)?;
    let logged_at = f.key_time("time", Kind::Sms)?;
    let sms_type = f.enumerated("smsType");
    let content = f.text("content");
    let sms_key = sms_key(
        &from_number,
        &to_number,
        sms_type.as_deref(),
        logged_at,
        content.as_deref(),
    );
    Ok(SmsRecord {
        sms_key,
        sms_type,
        from_number,
        to_number,
        status: f.enumerated("status"),
        content,
        logged_at,
        sms_charge: f.parsed("smsCharge", parse_decimal),
        agent_email: f.email("email"),
        agent_name: f.text("smsSendBy"),
        admin_email: f.email("adminEmail"),
        warnings: std::mem::take(&mut f.warnings),
    })
}

fn read_status(f: &mut Fields) -> Result<CallStatusRecord, Rejection> {
    let call_sid = f.key_text("callSid", Kind::CallStatus)?;
    let status = normalize_enum(&f.key_text("status", Kind::CallStatus)?);
    let occurred_at = f.key_time("dateTime", Kind::CallStatus)?;
    Ok(CallStatusRecord {
        call_sid,
        status,
        occurred_at,
        call_type: f.enumerated("callType"),
        from_number: f.text_or("fromNumber", "from"),
        to_number: f.text_or("toNumber", "to"),
        agent_email: f.email("agentEmail"),
        agent_id: f.text("agentId"),
        dial_code: f.text("dialCode"),
        warnings: std::mem::take(&mut f.warnings),
    })
}

/// The vendor gives an SMS no id: the key is a digest of what identifies a message, read
/// (not as bytes), so that a redelivery spelled differently still finds its row.
pub fn sms_key(
    from: &str,
    to: &str,
    sms_type: Option<&str>,
    time: DateTime<Utc>,
    content: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    for part in [
        from,
        to,
        sms_type.unwrap_or(""),
        &time.to_rfc3339_opts(SecondsFormat::Nanos, true),
        content.unwrap_or(""),
    ] {
        // Length-prefixed, so that no two different tuples give the same bytes.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}
