//! A call log record of CallHippo's API (`POST /activityfeed`) -> the call it describes, in
//! the same rows as a webhook's. The API names and writes its fields its own way: `date` +
//! `time` in the account's time zone ("Aug 11, 2026", "7:50:58 AM"), `callDuration` as
//! `HH:MM:SS`, `callCost` as a number, times of answer and hang-up in JavaScript's
//! `Date.toString()` form (`Tue Nov 03 2026 19:51:05 GMT+0000 (Coordinated Universal Time)`)
//! or ISO 8601. Pure, like the webhook reader: warnings name the API's fields.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::fields::{parse_decimal, parse_duration, parse_time, parse_whole, quote};
use super::record_fields::{Fields, Repeats};
use super::{describe, json_in_jsonb_order};
use crate::delivery::{Decoded, Delivery, Source, Times};
use crate::event::{CallRecord, Kind, Reading, Record, Rejection};

/// Reads one record of the activity feed. Its payload for the archive is the record's JSON
/// (keys in jsonb's order), and so is its digest: the same record read again is one
/// archived row.
pub fn decode_call(record: &Value, zone: Tz) -> Decoded {
    let payload = json_in_jsonb_order(record);
    let sha256: [u8; 32] = Sha256::digest(payload.as_bytes()).into();
    let reading = match record {
        Value::Object(obj) => match read_call(obj, zone) {
            Ok(call) => Reading::Record(Record::Call(call)),
            Err(rejection) => Reading::Rejected(rejection),
        },
        other => Reading::Rejected(Rejection {
            kind: Kind::Call,
            field: None,
            message: format!("a call log record is {}, not an object", describe(other)),
        }),
    };
    Decoded {
        sha256,
        payload: Some(payload),
        body: None,
        body_bytes: None,
        reading,
    }
}

/// A record of the activity feed as a delivery to write (its body: the archived JSON).
pub fn call_delivery(record: &Value, zone: Tz, read_at: DateTime<Utc>) -> Delivery {
    let decoded = decode_call(record, zone);
    Delivery {
        body: bytes::Bytes::from(decoded.payload.clone().unwrap_or_default()),
        decoded,
        content_type: None,
        received: Times::at(read_at),
        source: Source::Api,
    }
}

fn read_call(obj: &Map<String, Value>, zone: Tz) -> Result<CallRecord, Rejection> {
    let mut f = Fields {
        obj,
        warnings: Default::default(),
    };
    let call_sid = f.key_text("callSid", Kind::Call)?;
    let started_at = start(&mut f, zone);
    // `callDuration` is talk time as HH:MM:SS; `totalCallDuration` seconds, when it is not.
    let duration_seconds = f
        .parsed("callDuration", parse_duration)
        .or_else(|| f.parsed("totalCallDuration", |s| parse_whole(s, true)));
    Ok(CallRecord {
        call_sid,
        call_type: f.enumerated("callType"),
        from_number: f.indexed(|f| f.text("from"), "from"),
        to_number: f.indexed(|f| f.text("to"), "to"),
        dial_code: f.text("dialCode"),
        country_name: f.text("countryName"),
        status: f.enumerated("callStatus"),
        status_reason: f.text("statusReason"),
        duration_seconds,
        ring_seconds: f.parsed("ringingDuration", parse_duration),
        billed_minutes: f.parsed("billedMinutes", |s| parse_whole(s, false)),
        call_charge: f.parsed("callCost", parse_decimal),
        logged_at: started_at,
        started_at,
        ended_at: f.parsed("callHangupTime", parse_api_time),
        agent_email: f.indexed(|f| f.email("callerEmail"), "callerEmail"),
        agent_name: f.text("caller"),
        admin_email: f.email("adminEmail"),
        note: f.text("callNotes"),
        recording_url: f.text("recordingUrl"),
        answered_device: f.enumerated("answeredDevice"),
        hangup_by: f.enumerated("hangupBy"),
        call_queue: f.boolean("callQueue"),
        reason: f.text("reason"),
        dispositions: f.list("dispositions", Repeats::Keep),
        agent_id: f.text("agentId"),
        campaign_id: f.text("campaignId"),
        crm_unique_id: f.text("crmUniqueId"),
        virtual_number: f.text("virtualNumber"),
        answered_at: f.parsed("callAnswerTime", parse_api_time),
        api_id: f.text("_id"),
        tags: f.tag_names("callTags"),
        warnings: std::mem::take(&mut f.warnings),
    })
}

/// `date` + `time`, clock time in the account's zone, as a moment. A clock time that a
/// change to summer time skips is a warning; one that the change back gives twice is the
/// first of the two.
fn start(f: &mut Fields, zone: Tz) -> Option<DateTime<Utc>> {
    let date = f.parsed("date", parse_api_date)?;
    let time = f.parsed("time", parse_api_clock)?;
    match zone.from_local_datetime(&NaiveDateTime::new(date, time)) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
        LocalResult::None => {
            f.warn(
                "time",
                format!("{date} {time} does not exist in {zone} (the clocks skipped it)"),
            );
            None
        }
    }
}

/// A day as the API writes it: `Aug 11, 2026` (or `August 11, 2026`, or `2026-08-11`).
pub fn parse_api_date(raw: &str) -> Result<NaiveDate, String> {
    let s = raw.trim();
    ["%b %d, %Y", "%B %d, %Y", "%Y-%m-%d", "%Y/%m/%d"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(s, f).ok())
        .ok_or_else(|| format!("not a date such as \"Aug 11, 2026\": {}", quote(raw)))
}

/// A clock time as the API writes it: `7:50:58 AM` (or 24-hour `19:50:58`).
pub fn parse_api_clock(raw: &str) -> Result<NaiveTime, String> {
    let s = raw.trim();
    ["%I:%M:%S %p", "%I:%M %p", "%H:%M:%S", "%H:%M"]
        .iter()
        .find_map(|f| NaiveTime::parse_from_str(s, f).ok())
        .ok_or_else(|| format!("not a clock time such as \"7:50:58 AM\": {}", quote(raw)))
}

/// A moment as the API writes it: JavaScript's `Date.toString()` (`Tue Nov 03 2026 19:51:05
/// GMT+0000 (Coordinated Universal Time)`, the zone's name optional), or ISO 8601.
pub fn parse_api_time(raw: &str) -> Result<DateTime<Utc>, String> {
    let s = raw.trim();
    let without_name = s.split_once(" (").map_or(s, |(t, _)| t).trim();
    if let Ok(t) = DateTime::parse_from_str(without_name, "%a %b %d %Y %H:%M:%S GMT%z") {
        return Ok(t.with_timezone(&Utc));
    }
    parse_time(s).map_err(|_| {
        format!(
            "not a time such as \"Tue Nov 03 2026 19:51:05 GMT+0000\" or ISO 8601: {}",
            quote(raw)
        )
    })
}

#[cfg(test)]
mod tests;
