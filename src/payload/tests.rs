use rust_decimal::Decimal;
use serde_json::json;

use super::*;
use crate::event::{CallRecord, CallStatusRecord, Record, SmsRecord};

const VENDOR_CALL: &str = include_str!("../../tests/fixtures/vendor_call.json");
const VENDOR_SMS: &str = include_str!("../../tests/fixtures/vendor_sms.json");
const VENDOR_STATUS: &str = include_str!("../../tests/fixtures/vendor_status.json");
const NEWER_CALL: &str = include_str!("../../tests/fixtures/newer_call.json");

/// The payload read back as a JSON value.
fn value(d: &Decoded) -> Option<serde_json::Value> {
    d.payload
        .as_deref()
        .map(|text| serde_json::from_str(text).expect("the payload text is JSON"))
}

fn read(body: &str) -> Reading {
    decode(body.as_bytes(), Some("application/json")).reading
}

fn call(body: &str) -> CallRecord {
    match read(body) {
        Reading::Record(Record::Call(c)) => c,
        other => panic!("not a call: {other:?}"),
    }
}

fn sms(body: &str) -> SmsRecord {
    match read(body) {
        Reading::Record(Record::Sms(s)) => s,
        other => panic!("not an sms: {other:?}"),
    }
}

fn status(body: &str) -> CallStatusRecord {
    match read(body) {
        Reading::Record(Record::CallStatus(s)) => s,
        other => panic!("not a status: {other:?}"),
    }
}

fn rejected(body: &str) -> Rejection {
    match read(body) {
        Reading::Rejected(r) => r,
        other => panic!("not rejected: {other:?}"),
    }
}

fn dec(s: &str) -> Option<Decimal> {
    Some(s.parse().unwrap())
}

fn with(base: &str, field: &str, value: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
    v[field] = value;
    v.to_string()
}

fn without(base: &str, field: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
    v.as_object_mut().unwrap().remove(field);
    v.to_string()
}

#[test]
fn vendor_call_sample() {
    let c = call(VENDOR_CALL);
    assert_eq!(c.call_sid, "CA5fcabcd366fac3fe8c00c111f135e123");
    assert_eq!(c.call_type.as_deref(), Some("outgoing"));
    assert_eq!(c.from_number.as_deref(), Some("+9323243432"));
    assert_eq!(c.to_number.as_deref(), Some("+41232132131"));
    assert_eq!(c.dial_code.as_deref(), Some("41"));
    assert_eq!(c.country_name.as_deref(), Some("United Stated"));
    assert_eq!(c.status.as_deref(), Some("completed"));
    assert_eq!(c.duration_seconds, Some(490));
    assert_eq!(c.ring_seconds, Some(2));
    assert_eq!(c.billed_minutes, Some(9));
    assert_eq!(c.call_charge, dec("0.040"));
    assert_eq!(c.call_charge.unwrap().to_string(), "0.040");
    assert_eq!(
        c.logged_at.unwrap().to_rfc3339(),
        "2020-05-12T00:53:57.688+00:00"
    );
    assert_eq!(c.started_at, c.logged_at);
    assert_eq!(
        c.ended_at.unwrap().to_rfc3339(),
        "2020-05-12T01:01:05.688+00:00"
    );
    assert_eq!(c.agent_email.as_deref(), Some("test@example.com"));
    assert_eq!(c.agent_name.as_deref(), Some("Demo User"));
    assert_eq!(c.admin_email.as_deref(), Some("admin@example.com"));
    assert_eq!(c.note.as_deref(), Some("Call notes goes here"));
    assert_eq!(
        c.recording_url.as_deref(),
        Some("https://recording.XXX.mp3")
    );
    assert_eq!(c.answered_device.as_deref(), Some("web"));
    assert_eq!(c.hangup_by.as_deref(), Some("agent"));
    assert_eq!(c.call_queue, Some(false));
    assert_eq!(c.reason.as_deref(), Some("User not available"));
    assert_eq!(c.tags, vec!["Tag1", "Tag2"]);
    assert_eq!(c.dispositions, None);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn newer_call_shape() {
    let c = call(NEWER_CALL);
    assert_eq!(c.call_sid, "CA-newer-0001");
    assert_eq!(c.call_type.as_deref(), Some("incoming"));
    assert_eq!(c.from_number.as_deref(), Some("+14155550100"));
    assert_eq!(c.to_number.as_deref(), Some("+442071838750"));
    assert_eq!(
        c.dial_code.as_deref(),
        Some("44"),
        "a number becomes its text"
    );
    assert_eq!(c.status.as_deref(), Some("no_answer"));
    assert_eq!(c.status_reason.as_deref(), Some("Agent did not pick up"));
    assert_eq!(c.duration_seconds, Some(0));
    assert_eq!(c.ring_seconds, Some(31));
    assert_eq!(c.billed_minutes, Some(0));
    assert_eq!(c.call_charge.unwrap().to_string(), "0.0");
    assert_eq!(c.agent_email.as_deref(), Some("agent.one@example.com"));
    assert_eq!(c.admin_email.as_deref(), Some("owner@example.com"));
    assert_eq!(c.answered_device.as_deref(), Some("android"));
    assert_eq!(c.hangup_by.as_deref(), Some("client"));
    assert_eq!(c.call_queue, Some(true));
    assert_eq!(c.reason, None, "empty string is NULL");
    assert_eq!(c.note, None);
    assert_eq!(c.recording_url, None, "null is NULL");
    assert_eq!(c.tags, vec!["VIP", "Follow-up"]);
    assert_eq!(c.dispositions, Some(vec!["Callback requested".to_owned()]));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn duration_seconds_wins_over_duration() {
    let body = with(VENDOR_CALL, "durationSeconds", json!(75));
    assert_eq!(call(&body).duration_seconds, Some(75));
    let body = with(VENDOR_CALL, "durationSeconds", json!("x"));
    let c = call(&body);
    assert_eq!(c.duration_seconds, Some(490), "falls back to duration");
    assert!(c.warnings.contains_key("durationSeconds"));
    let body = with(VENDOR_CALL, "duration", json!("125:30"));
    assert_eq!(call(&body).duration_seconds, Some(7530));
    let body = with(VENDOR_CALL, "duration", json!("01:02:03"));
    assert_eq!(call(&body).duration_seconds, Some(3723));
    let body = with(VENDOR_CALL, "duration", json!(42));
    assert_eq!(call(&body).duration_seconds, Some(42));
}

#[test]
fn from_and_to_win_over_the_newer_names() {
    let body = with(VENDOR_CALL, "fromNumber", json!("+1999"));
    assert_eq!(call(&body).from_number.as_deref(), Some("+9323243432"));
    let body = with(
        &without(VENDOR_CALL, "from"),
        "fromNumber",
        json!(" +1999 "),
    );
    assert_eq!(call(&body).from_number.as_deref(), Some("+1999"));
}

#[test]
fn unreadable_fields_become_warnings_not_rejections() {
    let mut v: serde_json::Value = serde_json::from_str(VENDOR_CALL).unwrap();
    v["callCharge"] = json!("N/A");
    v["time"] = json!("yesterday");
    v["billedMinutes"] = json!("1.5");
    v["callQueue"] = json!("maybe");
    v["note"] = json!({"a": 1});
    v["duration"] = json!("ab:cd");
    let c = call(&v.to_string());
    assert_eq!(c.call_charge, None);
    assert_eq!(c.logged_at, None);
    assert_eq!(c.billed_minutes, None);
    assert_eq!(c.call_queue, None);
    assert_eq!(c.note, None);
    assert_eq!(c.duration_seconds, None);
    assert_eq!(c.warnings["callCharge"], r#"not a decimal number: "N/A""#);
    assert_eq!(c.warnings["time"], r#"not a time: "yesterday""#);
    assert_eq!(c.warnings["billedMinutes"], r#"not a whole number: "1.5""#);
    assert_eq!(c.warnings["callQueue"], r#"not a boolean: "maybe""#);
    assert_eq!(c.warnings["note"], "expected text, got an object");
    assert_eq!(c.warnings["duration"], r#"not a duration: "ab:cd""#);
    assert_eq!(c.warnings.len(), 6);
}

#[test]
fn money_sent_as_number_is_exact() {
    let c = call(&VENDOR_CALL.replace(r#""callCharge": "0.040""#, r#""callCharge": 0.040"#));
    assert_eq!(c.call_charge.unwrap().to_string(), "0.040");
    let c = call(&VENDOR_CALL.replace(r#""callCharge": "0.040""#, r#""callCharge": 0.1"#));
    assert_eq!(c.call_charge.unwrap().to_string(), "0.1");
}

#[test]
fn every_status_word_is_normalised() {
    for (sent, stored) in [
        ("Completed", "completed"),
        ("Missed", "missed"),
        ("Rejected", "rejected"),
        ("Voicemail", "voicemail"),
        ("Welcome message", "welcome_message"),
        ("IVR message", "ivr_message"),
        ("Unavailable", "unavailable"),
        ("Cancelled", "cancelled"),
        ("canceled", "cancelled"),
        ("No Answer", "no_answer"),
        ("no-answer", "no_answer"),
        ("Brand New Value", "brand_new_value"),
    ] {
        assert_eq!(
            call(&with(VENDOR_CALL, "status", json!(sent)))
                .status
                .as_deref(),
            Some(stored)
        );
    }
}

#[test]
fn tags_are_cleaned() {
    let c = call(&with(
        VENDOR_CALL,
        "tags",
        json!([" a ", "", null, "a", "B", 7]),
    ));
    assert_eq!(c.tags, vec!["a", "B", "7"]);
    let c = call(&with(VENDOR_CALL, "tags", json!("x, y ,,")));
    assert_eq!(c.tags, vec!["x", "y"]);
    let c = call(&with(VENDOR_CALL, "tags", json!([])));
    assert!(c.tags.is_empty());
    let c = call(&with(VENDOR_CALL, "tags", json!({"a": 1})));
    assert!(c.tags.is_empty());
    assert!(c.warnings.contains_key("tags"));
    let c = call(&without(VENDOR_CALL, "tags"));
    assert!(c.tags.is_empty());
    // Dispositions are trimmed and emptied of blanks, but a repeat is kept as sent.
    let c = call(&with(
        VENDOR_CALL,
        "dispositions",
        json!([" A ", "", "A", "B"]),
    ));
    assert_eq!(
        c.dispositions,
        Some(vec!["A".to_owned(), "A".to_owned(), "B".to_owned()])
    );
    let c = call(&with(VENDOR_CALL, "dispositions", json!(["", " "])));
    assert_eq!(c.dispositions, None);
}

#[test]
fn times_with_offsets_and_without() {
    for (sent, utc) in [
        ("2025-06-23T13:13:50.000Z", "2025-06-23T13:13:50+00:00"),
        ("2025-06-23T13:13:50Z", "2025-06-23T13:13:50+00:00"),
        ("2025-06-23T18:43:50+05:30", "2025-06-23T13:13:50+00:00"),
        ("2025-06-23T13:13:50", "2025-06-23T13:13:50+00:00"),
        (
            "2020-05-12T00:53:57.688+0000",
            "2020-05-12T00:53:57.688+00:00",
        ),
    ] {
        let c = call(&with(VENDOR_CALL, "startTime", json!(sent)));
        assert_eq!(c.started_at.unwrap().to_rfc3339(), utc, "{sent}");
    }
}

#[test]
fn vendor_sms_sample() {
    let s = sms(VENDOR_SMS);
    assert_eq!(s.sms_type.as_deref(), Some("outgoing"));
    assert_eq!(s.from_number, "+9323243432");
    assert_eq!(s.to_number, "+41232132131");
    assert_eq!(s.status.as_deref(), Some("completed"));
    assert_eq!(s.content.as_deref(), Some("SMS text goes here"));
    assert_eq!(s.logged_at.to_rfc3339(), "2020-05-12T00:53:57.688+00:00");
    assert_eq!(s.sms_charge.unwrap().to_string(), "0.040");
    assert_eq!(s.agent_email.as_deref(), Some("test@example.com"));
    assert_eq!(s.agent_name.as_deref(), Some("Demo User"));
    assert_eq!(s.admin_email.as_deref(), Some("admin@example.com"));
    assert_eq!(s.sms_key.len(), 64);
}

#[test]
fn sms_key_reads_values_not_bytes() {
    let a = sms(VENDOR_SMS);
    // Same message, spelled differently: other time notation, other case, extra spaces.
    let b = sms(&with(
        &with(VENDOR_SMS, "time", json!("2020-05-12T00:53:57.688Z")),
        "smsType",
        json!(" outgoing"),
    ));
    assert_eq!(a.sms_key, b.sms_key);
    let c = sms(&with(VENDOR_SMS, "content", json!("another text")));
    assert_ne!(a.sms_key, c.sms_key);
    let d = sms(&with(VENDOR_SMS, "time", json!("2020-05-12T00:53:58.688Z")));
    assert_ne!(a.sms_key, d.sms_key);
}

#[test]
fn vendor_status_sample() {
    let s = status(VENDOR_STATUS);
    assert_eq!(s.call_sid, "8956bxxxxxxxxx-xxxxxx-xxxxxx02428");
    assert_eq!(s.status, "completed");
    assert_eq!(s.occurred_at.to_rfc3339(), "2024-03-28T10:05:50+00:00");
    assert_eq!(s.call_type.as_deref(), Some("outgoing"));
    assert_eq!(s.from_number.as_deref(), Some("+17xxxxxxxx6"));
    assert_eq!(s.to_number.as_deref(), Some("+13xxxxxxxx0"));
    assert_eq!(s.agent_email.as_deref(), Some("test@example.com"));
    assert_eq!(s.agent_id.as_deref(), Some("610xxxxxxxxxxxxxxxxxx8f3"));
    assert_eq!(s.dial_code.as_deref(), Some("1"));
}

#[test]
fn kind_rules() {
    assert_eq!(
        read(r#"{"type":" CALL ","callSid":"x"}"#).kind(),
        Kind::Call
    );
    assert_eq!(
        read(r#"{"activityType":"SMS","from":"1","to":"2","time":"2020-05-12T00:53:57Z"}"#).kind(),
        Kind::Sms
    );
    assert_eq!(
        read(r#"{"activityType":"fax","callSid":"x","dateTime":"y"}"#).kind(),
        Kind::Unknown
    );
    // activityType wins over type; a blank one is skipped.
    assert_eq!(
        read(r#"{"activityType":"call","type":"sms","callSid":"x"}"#).kind(),
        Kind::Call
    );
    assert_eq!(
        read(r#"{"activityType":"  ","type":"call","callSid":"x"}"#).kind(),
        Kind::Call
    );
    // Status: callSid (whatever its value) with dateTime, fromNumber or agentId.
    assert_eq!(
        read(r#"{"callSid":"x","agentId":"a"}"#).kind(),
        Kind::CallStatus
    );
    assert_eq!(
        read(r#"{"callSid":null,"fromNumber":"a"}"#).kind(),
        Kind::CallStatus
    );
    assert_eq!(read(r#"{"callSid":"x"}"#).kind(), Kind::Unknown);
    // Call Notify and other unknown shapes.
    assert_eq!(
        read(r#"{"event":"call_notify","agent":"x"}"#),
        Reading::Unknown
    );
    assert_eq!(read(r#"{}"#), Reading::Unknown);
}

#[test]
fn connection_test_comes_first() {
    assert_eq!(read(r#"{"to":"+11111111111"}"#), Reading::Test);
    assert_eq!(
        read(r#"{"activityType":"call","toNumber":" +11111111111 "}"#),
        Reading::Test
    );
    // Even when it would otherwise be rejected for a missing key.
    assert_eq!(
        read(r#"{"activityType":"sms","to":"+11111111111"}"#),
        Reading::Test
    );
}

#[test]
fn missing_keys_are_rejected_naming_the_field() {
    let r = rejected(&without(VENDOR_CALL, "callSid"));
    assert_eq!(
        (r.kind, r.field.as_deref(), r.http_status()),
        (Kind::Call, Some("callSid"), 422)
    );
    let r = rejected(&with(VENDOR_CALL, "callSid", json!("  ")));
    assert_eq!(r.field.as_deref(), Some("callSid"));
    assert!(r.message.contains("empty"), "{}", r.message);
    let r = rejected(&with(VENDOR_CALL, "callSid", json!({"a": 1})));
    assert_eq!(r.field.as_deref(), Some("callSid"));
    for field in ["from", "to", "time"] {
        let r = rejected(&without(VENDOR_SMS, field));
        assert_eq!((r.kind, r.field.as_deref()), (Kind::Sms, Some(field)));
    }
    let r = rejected(&with(VENDOR_SMS, "time", json!("soon")));
    assert_eq!(r.field.as_deref(), Some("time"));
    assert!(r.message.contains("not a time"), "{}", r.message);
    for field in ["status", "dateTime"] {
        let r = rejected(&without(VENDOR_STATUS, field));
        assert_eq!(
            (r.kind, r.field.as_deref()),
            (Kind::CallStatus, Some(field))
        );
    }
    let r = rejected(&with(VENDOR_STATUS, "callSid", json!("")));
    assert_eq!(r.field.as_deref(), Some("callSid"));
}

#[test]
fn bodies_that_are_not_objects() {
    for body in [
        "", "   ", "not json", "[1,2]", "42", "\"x\"", "{\"a\":", "null",
    ] {
        let d = decode(body.as_bytes(), None);
        match &d.reading {
            Reading::Rejected(r) => {
                assert_eq!((r.kind, r.http_status()), (Kind::Invalid, 400), "{body}")
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    let d = decode(b"not json", None);
    assert_eq!(d.payload, None);
    assert_eq!(d.body.as_deref(), Some("not json"));
    let d = decode(b"[1,2]", None);
    assert_eq!(value(&d), Some(json!([1, 2])));
}

#[test]
fn byte_order_mark_is_ignored() {
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(VENDOR_CALL.as_bytes());
    let d = decode(&body, Some("text/plain"));
    assert!(matches!(d.reading, Reading::Record(Record::Call(_))));
    assert_eq!(d.body, None);
}

/// Every object's keys are printed in jsonb's order (length, then bytes), at every depth, and
/// the text reads back as the same value, escapes and all.
#[test]
fn payload_prints_keys_in_jsonb_order() {
    let body = r#"{"activityType":"call","callSid":"CA1","zz":1,"b":{"ccc":"\"q\"","a":[{"yy":null,"x":true}],"é":"\u00e9\n"},"aaa":-1.50e3,"ab":[],"a":{}}"#;
    let printed = decode(body.as_bytes(), None).payload.unwrap();
    assert_eq!(
        printed,
        r#"{"a":{},"b":{"a":[{"x":true,"yy":null}],"é":"é\n","ccc":"\"q\""},"ab":[],"zz":1,"aaa":-1.50e+3,"callSid":"CA1","activityType":"call"}"#
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&printed).unwrap(),
        serde_json::from_str::<serde_json::Value>(body).unwrap()
    );
}

/// The payload's JSON text is printed from the parsed value: what PostgreSQL stores. An
/// escaped lone surrogate, which PostgreSQL refuses, never reads as JSON.
#[test]
fn payload_is_the_parsed_value() {
    let d = decode(VENDOR_CALL.as_bytes(), None);
    let printed = d.payload.unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&printed).unwrap(),
        serde_json::from_str::<serde_json::Value>(VENDOR_CALL).unwrap()
    );
    let repeated = br#"{"activityType":"call","callSid":"CA1","note":"a\u0000","note":"b"}"#;
    let printed = decode(repeated, None).payload.unwrap();
    assert!(
        !printed.contains("u0000") && printed.contains(r#""note":"b""#),
        "{printed}"
    );
    assert_eq!(decode(b"not json", None).payload, None);

    for lone in [r#"\ud800"#, r#"\udc00"#, r#"\udc00\ud800"#, r#"\ud800x"#] {
        let body = format!(r#"{{"activityType":"call","callSid":"CA3","note":"{lone}"}}"#);
        let d = decode(body.as_bytes(), None);
        assert!(d.payload.is_none(), "{body} read as JSON");
        assert!(matches!(d.reading, Reading::Rejected(_)));
    }
}

#[test]
fn json_is_read_whatever_the_content_type() {
    let d = decode(
        VENDOR_SMS.as_bytes(),
        Some("application/x-www-form-urlencoded"),
    );
    assert!(matches!(d.reading, Reading::Record(Record::Sms(_))));
    let d = decode(VENDOR_SMS.as_bytes(), Some("text/html"));
    assert!(matches!(d.reading, Reading::Record(Record::Sms(_))));
}

#[test]
fn form_bodies_are_read_as_objects() {
    let body = "activityType=call&callSid=CA1&from=%2B1555&to=%2B1666&callQueue=true\
                &billedMinutes=3&callCharge=0.05&tags%5B%5D=a&tags%5B%5D=b";
    let d = decode(
        body.as_bytes(),
        Some("application/x-www-form-urlencoded; charset=utf-8"),
    );
    let c = match &d.reading {
        Reading::Record(Record::Call(c)) => c.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(c.from_number.as_deref(), Some("+1555"));
    assert_eq!(c.call_queue, Some(true));
    assert_eq!(c.billed_minutes, Some(3));
    assert_eq!(c.tags, vec!["a", "b"]);
    assert_eq!(d.body.as_deref(), Some(body), "the form text is kept");
    assert_eq!(value(&d).unwrap()["callSid"], json!("CA1"));
    // Without the form content type the same text is not JSON.
    assert_eq!(decode(body.as_bytes(), None).kind(), Kind::Invalid);
    assert_eq!(
        decode(b"", Some("application/x-www-form-urlencoded")).kind(),
        Kind::Invalid
    );
    assert_eq!(
        decode(b"nope", Some("application/x-www-form-urlencoded")).kind(),
        Kind::Invalid
    );
}

#[test]
fn nul_characters_are_kept_in_the_body_and_removed_from_the_payload() {
    let body = with(VENDOR_CALL, "note", json!("a\u{0}b"));
    assert!(body.contains("\\u0000"));
    let d = decode(body.as_bytes(), None);
    assert_eq!(d.body.as_deref(), Some(body.as_str()), "original text kept");
    assert_eq!(value(&d).unwrap()["note"], json!("ab"));
    match d.reading {
        Reading::Record(Record::Call(c)) => {
            assert_eq!(c.note.as_deref(), Some("ab"));
            assert!(c.warnings.contains_key("note"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn raw_bytes_that_text_cannot_hold_are_kept_as_bytes() {
    let body = b"{\"a\":\"\xff\"}\x00";
    let d = decode(body, None);
    assert_eq!(d.kind(), Kind::Invalid);
    assert_eq!(d.body_bytes.as_deref(), Some(&body[..]));
    assert!(!d.body.as_ref().unwrap().contains('\0'));
}

#[test]
fn identical_bytes_have_identical_digests() {
    assert_eq!(decode(b"{}", None).sha256, decode(b"{}", None).sha256);
    assert_ne!(decode(b"{}", None).sha256, decode(b"{ }", None).sha256);
}

#[test]
fn deep_nesting_and_huge_numbers_do_not_panic() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(decode(deep.as_bytes(), None).kind(), Kind::Invalid);
    let d = decode(br#"{"activityType":"call","callSid":"x","billedMinutes":1e999999,"callCharge":123456789012345678901234567890123456789}"#, None);
    match d.reading {
        Reading::Record(Record::Call(c)) => {
            assert_eq!(c.billed_minutes, None);
            assert_eq!(c.call_charge, None);
            assert!(c.warnings.contains_key("billedMinutes"));
            assert!(c.warnings.contains_key("callCharge"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sms_key_is_length_prefixed() {
    let t = chrono::Utc::now();
    assert_ne!(
        reader::sms_key("ab", "c", None, t, None),
        reader::sms_key("a", "bc", None, t, None)
    );
}

#[test]
fn values_postgresql_could_not_index_or_store() {
    let long = "x".repeat(super::reader::MAX_INDEXED_BYTES + 1);
    let r = rejected(&with(VENDOR_CALL, "callSid", json!(long)));
    assert_eq!(r.field.as_deref(), Some("callSid"));
    assert!(
        r.message.len() < 100,
        "the answer does not echo the value: {}",
        r.message
    );
    let r = rejected(&with(VENDOR_STATUS, "status", json!(long)));
    assert_eq!(r.field.as_deref(), Some("status"));
    let c = call(&with(
        &with(
            &with(VENDOR_CALL, "email", json!(format!("{long}@x.io"))),
            "from",
            json!(long),
        ),
        "tags",
        json!(["ok", long]),
    ));
    assert_eq!((c.agent_email, c.from_number), (None, None));
    assert_eq!(c.tags, vec!["ok"]);
    for field in ["email", "from", "tags"] {
        assert!(c.warnings.contains_key(field), "{field}: {:?}", c.warnings);
    }
    let c = call(&with(VENDOR_CALL, "time", json!("0000-01-01T00:00:00Z")));
    assert_eq!(c.logged_at, None);
    assert!(c.warnings["time"].contains("out of range"));
    let r = rejected(&with(VENDOR_SMS, "time", json!("0000-01-01T00:00:00Z")));
    assert_eq!(r.field.as_deref(), Some("time"));
}

#[test]
fn extra_params_of_newer_payloads_fill_their_columns() {
    let extra = json!({"agentId": "61a0f3c2e4b0", "campaignId": 4211, "crmUniqueId": " lead-77 ",
                       "virtualNumber": "+18885550199", "somethingNew": true});
    let c = call(&with(NEWER_CALL, "extraParams", extra));
    assert_eq!(c.agent_id.as_deref(), Some("61a0f3c2e4b0"));
    assert_eq!(
        c.campaign_id.as_deref(),
        Some("4211"),
        "a number becomes its text"
    );
    assert_eq!(c.crm_unique_id.as_deref(), Some("lead-77"));
    assert_eq!(c.virtual_number.as_deref(), Some("+18885550199"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let c = call(&with(
        NEWER_CALL,
        "extraParams",
        json!({"agentId": "", "campaignId": null}),
    ));
    assert_eq!((c.agent_id, c.campaign_id), (None, None));

    let c = call(&with(NEWER_CALL, "extraParams", json!({"agentId": ["a"]})));
    assert_eq!(c.agent_id, None);
    assert_eq!(
        c.warnings["extraParams.agentId"],
        "expected text, got an array"
    );

    let c = call(&with(NEWER_CALL, "extraParams", json!("agent-1")));
    assert_eq!(c.agent_id, None);
    assert_eq!(
        c.warnings["extraParams"],
        "expected an object, got a string"
    );
    assert_eq!(call(NEWER_CALL).virtual_number, None, "absent: NULL");
}

#[test]
fn a_call_keeps_a_hundred_distinct_tags_at_most() {
    let names: Vec<String> = (0..5000).map(|i| format!("tag-{}", i % 2500)).collect();
    let c = call(&with(VENDOR_CALL, "tags", json!(names)));
    assert_eq!(c.tags.len(), 100);
    assert_eq!(c.tags[0], "tag-0");
    assert_eq!(c.tags[99], "tag-99");
    assert_eq!(
        c.warnings["tags"],
        "2500 names: the first 100 kept, the rest dropped"
    );
}
