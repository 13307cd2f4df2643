use chrono::{DateTime, Utc};
use chrono_tz::America::New_York;
use serde_json::{json, Value};

use super::*;

/// A record as the activity feed gives it (the forms the API's clients saw).
fn record() -> Value {
    json!({
        "_id": "64f1a2b3c4d5e6f708192a3b",
        "callSid": "CA5f00d1e2",
        "callType": "Outgoing",
        "from": "+15551234567",
        "to": "+15557654321",
        "date": "Aug 11, 2026",
        "time": "7:50:58 AM",
        "dateToShow": "11 Aug 2026",
        "callDuration": "00:00:37",
        "totalCallDuration": 37,
        "ringingDuration": "00:04",
        "callStatus": "Completed",
        "caller": "Demo User",
        "callerEmail": "Demo.User@Example.com",
        "fromName": "Jane Client",
        "callCost": 0.04,
        "lastUpdatedCredits": 12.5,
        "callNotes": "Wants a callback on Monday",
        "callTags": ["VIP", " Sales ", "VIP", ""],
        "recordingUrl": "",
        "callAnswerTime": "Tue Aug 11 2026 11:51:02 GMT+0000 (Coordinated Universal Time)",
        "callHangupTime": "2026-08-11T11:51:39.000Z"
    })
}

fn call(v: &Value) -> CallRecord {
    match decode_call(v, New_York).reading {
        Reading::Record(Record::Call(c)) => c,
        other => panic!("not a call: {other:?}"),
    }
}

fn utc(s: &str) -> Option<DateTime<Utc>> {
    Some(s.parse().unwrap())
}

fn with(field: &str, value: Value) -> Value {
    let mut v = record();
    v[field] = value;
    v
}

#[test]
fn a_record_reads_field_by_field_into_a_call() {
    let c = call(&record());
    assert_eq!(c.call_sid, "CA5f00d1e2");
    assert_eq!(c.api_id.as_deref(), Some("64f1a2b3c4d5e6f708192a3b"));
    assert_eq!(c.call_type.as_deref(), Some("outgoing"));
    assert_eq!(c.from_number.as_deref(), Some("+15551234567"));
    assert_eq!(c.to_number.as_deref(), Some("+15557654321"));
    // 7:50:58 in New York in August is summer time, UTC-4.
    assert_eq!(c.started_at, utc("2026-08-11T11:50:58Z"));
    assert_eq!(c.logged_at, c.started_at);
    assert_eq!(c.duration_seconds, Some(37));
    assert_eq!(c.ring_seconds, Some(4));
    assert_eq!(c.status.as_deref(), Some("completed"));
    assert_eq!(c.agent_name.as_deref(), Some("Demo User"));
    assert_eq!(c.agent_email.as_deref(), Some("demo.user@example.com"));
    assert_eq!(
        c.call_charge.map(|d| d.to_string()).as_deref(),
        Some("0.04")
    );
    assert_eq!(c.note.as_deref(), Some("Wants a callback on Monday"));
    assert_eq!(c.tags, ["VIP", "Sales"]);
    assert_eq!(c.recording_url, None, "an empty string is NULL");
    assert_eq!(c.answered_at, utc("2026-08-11T11:51:02Z"));
    assert_eq!(c.ended_at, utc("2026-08-11T11:51:39Z"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn the_account_zone_decides_the_moment_across_changes_of_the_clocks() {
    let at = |date: &str, time: &str| {
        let mut v = with("date", json!(date));
        v["time"] = json!(time);
        call(&v)
    };
    // Winter time, UTC-5.
    assert_eq!(
        at("Dec 1, 2026", "7:50:58 AM").started_at,
        utc("2026-12-01T12:50:58Z")
    );
    // 23:59 local is the next day in UTC.
    assert_eq!(
        at("Dec 1, 2026", "11:59:00 PM").started_at,
        utc("2026-12-02T04:59:00Z")
    );
    // 12 AM is midnight, 12 PM noon.
    assert_eq!(
        at("Dec 1, 2026", "12:05:00 AM").started_at,
        utc("2026-12-01T05:05:00Z")
    );
    assert_eq!(
        at("Dec 1, 2026", "12:05:00 PM").started_at,
        utc("2026-12-01T17:05:00Z")
    );
    // 8 March 2026: 2:00 becomes 3:00; 2:30 never happens.
    let skipped = at("Mar 8, 2026", "2:30:00 AM");
    assert_eq!(skipped.started_at, None);
    assert!(skipped.warnings["time"].contains("does not exist in America/New_York"));
    assert_eq!(
        at("Mar 8, 2026", "3:30:00 AM").started_at,
        utc("2026-03-08T07:30:00Z")
    );
    // 1 November 2026: 1:30 happens twice; the first (still summer time) is taken.
    assert_eq!(
        at("Nov 1, 2026", "1:30:00 AM").started_at,
        utc("2026-11-01T05:30:00Z")
    );
    assert_eq!(
        at("Nov 1, 2026", "2:30:00 AM").started_at,
        utc("2026-11-01T07:30:00Z")
    );
}

#[test]
fn unreadable_fields_are_warnings_under_the_apis_names() {
    // callDuration unreadable: said, and totalCallDuration (seconds) is taken instead.
    let mut v = with("callDuration", json!("37 seconds"));
    v["totalCallDuration"] = json!(41);
    let c = call(&v);
    assert_eq!(c.duration_seconds, Some(41));
    assert!(c.warnings.contains_key("callDuration"), "{:?}", c.warnings);
    v.as_object_mut().unwrap().remove("callDuration");
    assert_eq!(
        call(&v).duration_seconds,
        Some(41),
        "totalCallDuration when absent"
    );

    let c = call(&with("date", json!("11/08/2026")));
    assert_eq!(c.started_at, None);
    assert!(
        c.warnings["date"].contains("Aug 11, 2026"),
        "{:?}",
        c.warnings
    );
    let c = call(&with("callCost", json!("N/A")));
    assert_eq!(c.call_charge, None);
    assert!(c.warnings.contains_key("callCost"));
    let c = call(&with("callHangupTime", json!("soon")));
    assert!(c.warnings.contains_key("callHangupTime"));
    let c = call(&with("callTags", json!("VIP, Sales")));
    assert_eq!(
        c.tags,
        ["VIP", "Sales"],
        "a string of names, as webhooks may send"
    );
}

#[test]
fn api_times_in_each_form() {
    for raw in [
        "Tue Nov 03 2026 19:51:05 GMT+0000 (Coordinated Universal Time)",
        "Tue Nov 03 2026 19:51:05 GMT+0000",
        "Tue Nov 03 2026 14:51:05 GMT-0500 (Eastern Standard Time)",
        "2026-11-03T19:51:05.000Z",
        "2026-11-03T19:51:05+00:00",
    ] {
        assert_eq!(
            parse_api_time(raw).ok(),
            utc("2026-11-03T19:51:05Z"),
            "{raw}"
        );
    }
    assert!(parse_api_time("Nov 3").is_err());
    assert_eq!(
        parse_api_date("August 11, 2026").unwrap().to_string(),
        "2026-08-11"
    );
    assert_eq!(parse_api_clock("19:50:58").unwrap().to_string(), "19:50:58");
}

#[test]
fn a_record_without_its_key_or_not_an_object_is_rejected() {
    let mut v = record();
    v["callSid"] = json!("");
    match decode_call(&v, New_York).reading {
        Reading::Rejected(r) => assert_eq!(r.field.as_deref(), Some("callSid")),
        other => panic!("{other:?}"),
    }
    match decode_call(&json!(["a list"]), New_York).reading {
        Reading::Rejected(r) => assert!(r.message.contains("an array"), "{}", r.message),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_archive_keeps_the_record_whole_and_one_row_per_record() {
    let a = decode_call(&record(), New_York);
    let payload: Value = serde_json::from_str(a.payload.as_deref().unwrap()).unwrap();
    assert_eq!(
        payload,
        record(),
        "fields without a column (fromName…) are kept"
    );
    // The same record with its keys in another order is the same archived row.
    let reordered: Value = serde_json::from_str(&{
        let mut fields: Vec<(String, Value)> =
            record().as_object().unwrap().clone().into_iter().collect();
        fields.reverse();
        let map: serde_json::Map<String, Value> = fields.into_iter().collect();
        Value::Object(map).to_string()
    })
    .unwrap();
    assert_eq!(decode_call(&reordered, New_York).sha256, a.sha256);
    assert_ne!(
        decode_call(&with("callNotes", json!("other")), New_York).sha256,
        a.sha256
    );
}
