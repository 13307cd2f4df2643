//! `loadgen hostile`: a few hundred malformed, oversized and adversarial bodies, each sent to
//! `POST /webhooks/callhippo`. Every answer must be below 500 and come within the timeout;
//! afterwards the server must still answer `/readyz` 200 and store a valid event.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::gen::Rng;

const PATH: &str = "/webhooks/callhippo";
const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

/// One hostile request.
pub struct Case {
    /// `category: detail`; the category groups the summary.
    pub label: String,
    pub content_type: Option<&'static str>,
    pub body: Bytes,
    /// Sent with `Transfer-Encoding: chunked` (no `Content-Length`), in 64 KiB chunks.
    pub chunked: bool,
    /// The server may close the connection instead of answering (a body past its drain limit).
    pub reset_ok: bool,
}

impl Case {
    fn new(label: impl Into<String>, content_type: Option<&'static str>, body: Vec<u8>) -> Case {
        Case {
            label: label.into(),
            content_type,
            body: Bytes::from(body),
            chunked: false,
            reset_ok: false,
        }
    }
    fn json(label: impl Into<String>, body: impl Into<Vec<u8>>) -> Case {
        Case::new(label, Some(JSON), body.into())
    }
}

/// A request body of known or unknown length (hyper sends the latter chunked).
struct Payload {
    chunks: VecDeque<Bytes>,
    len: Option<u64>,
}

impl Payload {
    fn of(case: &Case) -> Payload {
        if case.chunked {
            let mut chunks = VecDeque::new();
            let mut rest = case.body.clone();
            while !rest.is_empty() {
                let n = rest.len().min(64 << 10);
                chunks.push_back(rest.split_to(n));
            }
            Payload { chunks, len: None }
        } else {
            let mut chunks = VecDeque::new();
            if !case.body.is_empty() {
                chunks.push_back(case.body.clone());
            }
            Payload {
                chunks,
                len: Some(case.body.len() as u64),
            }
        }
    }
}

impl hyper::body::Body for Payload {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }
    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }
    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

// ------------------------------------------------------------------ the bodies

/// Random letters and digits: incompressible, so that PostgreSQL cannot squeeze a long key
/// under its index row limit.
fn alnum(rng: &mut Rng, n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| A[rng.below(A.len() as u64) as usize] as char)
        .collect()
}

fn q(s: &str) -> String {
    format!("\"{s}\"")
}

pub(crate) type Fields = Vec<(&'static str, String)>;
/// A template of a valid event, made unique by its argument.
type Template = fn(&str) -> Fields;

pub(crate) fn render(fields: &Fields) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("\"{k}\":{v}"));
    }
    s.push('}');
    s
}

pub(crate) fn with(mut fields: Fields, key: &'static str, value: String) -> Fields {
    match fields.iter_mut().find(|(k, _)| *k == key) {
        Some(f) => f.1 = value,
        None => fields.push((key, value)),
    }
    fields
}

/// Templates of valid events; `tag` makes each body's key unique.
pub(crate) fn call_new(tag: &str) -> Fields {
    vec![
        ("type", q("Call")),
        ("callSid", q(&format!("CAHOSTILE{tag}"))),
        ("callType", q("Outgoing")),
        ("fromNumber", q("+14155550100")),
        ("toNumber", q("+442071830000")),
        ("dialCode", "1".into()),
        ("countryName", q("United States")),
        ("status", q("Completed")),
        ("statusReason", q("Call ended normally")),
        ("duration", q("01:05")),
        ("durationSeconds", "65".into()),
        ("ringAnswerDuration", q("00:05")),
        ("billedMinutes", q("2")),
        ("callCharge", "0.04".into()),
        ("time", q("2025-06-23T13:13:50.000Z")),
        ("startTime", q("2025-06-23T13:12:40.000Z")),
        ("endTime", q("2025-06-23T13:13:50.000Z")),
        ("email", q("Agent@Example.com")),
        ("callerName", q("Asha Patel")),
        ("adminEmail", q("owner@example.com")),
        ("answeredDevice", q("Web")),
        ("hangupBy", q("Agent")),
        ("callQueue", "true".into()),
        ("reason", q("")),
        ("tags", r#"["VIP","Sales"]"#.into()),
        ("dispositions", r#"["Callback requested"]"#.into()),
        ("recordingUrl", "null".into()),
        ("note", q("hostile drill")),
    ]
}

fn call_old(tag: &str) -> Fields {
    vec![
        ("activityType", q("call")),
        ("from", q("+9323243432")),
        ("to", q("+41232132131")),
        ("dialCode", q("91")),
        ("callType", q("Incoming")),
        ("duration", q("08:10")),
        ("status", q("No Answer")),
        ("time", q("2020-05-12T00:53:57.688+0000")),
        ("callCharge", q("0.040")),
        ("email", q("agent@example.com")),
        ("callerName", q("Ben Cole")),
        ("adminEmail", q("admin@example.com")),
        ("callSid", q(&format!("CAHOSTILEOLD{tag}"))),
        ("startTime", q("2020-05-12T00:45:47.688+0000")),
        ("endTime", q("2020-05-12T00:53:57.688+0000")),
        ("note", q("old shape")),
        ("recordingUrl", q("https://recordings.example.com/x.mp3")),
        ("countryName", q("India")),
        ("answeredDevice", q("web")),
        ("ringAnswerDuration", q("00:12")),
        ("billedMinutes", "9".into()),
        ("hangupBy", q("Client")),
        ("tags", r#"["Tag1","Tag2"]"#.into()),
        ("callQueue", "false".into()),
        ("reason", q("")),
    ]
}

fn sms(tag: &str) -> Fields {
    vec![
        ("activityType", q("sms")),
        ("content", q(&format!("hostile drill message {tag}"))),
        ("from", q("+14155550101")),
        ("to", q("+442071830001")),
        ("smsType", q("Outgoing")),
        ("status", q("Completed")),
        ("time", q("2020-05-12T00:53:57.688+0000")),
        ("smsCharge", q("0.040")),
        ("email", q("agent@example.com")),
        ("smsSendBy", q("Carla Diaz")),
        ("adminEmail", q("admin@example.com")),
    ]
}

fn status(tag: &str) -> Fields {
    vec![
        ("agentEmail", q("agent@example.com")),
        ("callType", q("Outgoing")),
        ("fromNumber", q("+17000000000")),
        ("toNumber", q("+13000000000")),
        ("agentId", q("6100000000000000008f3")),
        ("callSid", q(&format!("CAHOSTILEST{tag}"))),
        ("dateTime", q("2025-06-23T13:13:50.000Z")),
        ("dialCode", q("1")),
        ("status", q("ringing")),
    ]
}

/// Every hostile body, for a server whose `MAX_BODY_BYTES` is `limit`.
pub fn cases(limit: usize, run: u32) -> Vec<Case> {
    let mut rng = Rng::new(0x0405_711E ^ run as u64);
    let mut out: Vec<Case> = Vec::new();
    let mut n = 0u64;
    let mut tag = || {
        n += 1;
        format!("{run:08x}N{n}")
    };
    let templates: [(&str, Template); 4] = [
        ("call", call_new),
        ("call-old", call_old),
        ("sms", sms),
        ("status", status),
    ];

    // Valid ones first and last: a baseline for the summary.
    for (name, t) in templates {
        out.push(Case::json(format!("valid: {name}"), render(&t(&tag()))));
    }

    // Wrong types (and a missing value) for every field of every template.
    let wrong: [(&str, &str); 8] = [
        ("null", "null"),
        ("true", "true"),
        ("-1", "-1"),
        ("1e400", "1e400"),
        ("empty string", "\"\""),
        ("\\u0000 string", "\"\\u0000x\\u0000\""),
        ("empty array", "[]"),
        ("object", r#"{"a":[1,{"b":null}],"c":"d"}"#),
    ];
    for (name, t) in templates {
        let fields = t("x");
        for (key, _) in &fields {
            for (wname, w) in wrong {
                out.push(Case::json(
                    format!("wrong type: {name}.{key} = {wname}"),
                    render(&with(t(&tag()), key, w.to_string())),
                ));
            }
            let mut without = t(&tag());
            without.retain(|(k, _)| k != key);
            out.push(Case::json(
                format!("wrong type: {name} without {key}"),
                render(&without),
            ));
        }
    }

    // Invalid JSON.
    let valid = render(&call_new(&tag()));
    for (i, bad) in [
        "{",
        "}",
        "[",
        "{\"callSid\":",
        "{\"callSid\":\"CA1\"",
        "{\"callSid\":\"CA1\",}",
        "{'callSid':'CA1'}",
        "{callSid:\"CA1\"}",
        "{\"a\":NaN}",
        "{\"a\":Infinity}",
        "{\"a\":-Infinity}",
        "{\"a\":1}/*comment*/",
        "// comment\n{}",
        "{\"a\":1}{\"b\":2}",
        "{\"a\":1} trailing",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"unterminated",
        "{\"a\":01}",
        "{\"a\":+1}",
        "{\"a\":.5}",
        "{\"a\":1.}",
        "{\"a\":0x10}",
        "{\"a\":tru}",
        "{\"a\":\"tab\tin string\"}",
        "{\"a\":\"new\nline\"}",
        "{\"callSid\":\"CA1\" \"x\":1}",
        "{\"callSid\":\"\\ud800\"}",
        "{\"callSid\":\"\\udfff\"}",
        "{\"note\":\"\\ud800\\u0041\"}",
        "\u{feff}\u{feff}{}",
        "{\"a\":[1,2,]}",
        "{\"a\" 1}",
        "{,}",
        "{\"a\":1,,\"b\":2}",
    ]
    .iter()
    .enumerate()
    {
        out.push(Case::json(format!("invalid json: #{i} {bad:.20}"), *bad));
    }
    for cut in [1, 2, 10, 50, 100, 200, 300, 400, 500, valid.len() - 1] {
        out.push(Case::json(
            format!("invalid json: a call cut at byte {cut}"),
            &valid.as_bytes()[..cut.min(valid.len() - 1)],
        ));
    }
    for i in 0..30 {
        let len = 1 + rng.below(if i < 25 { 400 } else { 60_000 }) as usize;
        let body: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        out.push(Case::json(
            format!("invalid json: {len} random bytes"),
            body,
        ));
    }

    // Invalid UTF-8.
    let t = tag();
    for (name, body) in [
        (
            "0xff 0xfe in callSid",
            format!("{{\"callSid\":\"CA{t}\u{1}\",\"activityType\":\"call\"}}").into_bytes(),
        ),
        (
            "overlong /",
            b"{\"activityType\":\"call\",\"callSid\":\"CA\xc0\xaf\"}".to_vec(),
        ),
        (
            "encoded surrogate",
            b"{\"activityType\":\"call\",\"callSid\":\"CAX1\",\"note\":\"\xed\xa0\x80\"}".to_vec(),
        ),
        (
            "truncated sequence",
            b"{\"activityType\":\"call\",\"callSid\":\"CAX2\",\"note\":\"abc\xe2\x82\"}".to_vec(),
        ),
        ("0xff before the object", b"\xff{\"a\":1}".to_vec()),
        (
            "invalid key",
            b"{\"\xfe\xff\":1,\"activityType\":\"call\",\"callSid\":\"CAX3\"}".to_vec(),
        ),
        (
            "latin-1 name",
            b"{\"activityType\":\"call\",\"callSid\":\"CAX4\",\"callerName\":\"Jos\xe9\"}".to_vec(),
        ),
        ("only 0xff", vec![0xff; 100]),
        (
            "utf-16le",
            "{\"a\":1}"
                .encode_utf16()
                .flat_map(|u| u.to_le_bytes())
                .collect(),
        ),
    ] {
        let mut body = body;
        if name == "0xff 0xfe in callSid" {
            let p = body.iter().position(|&b| b == 1).expect("marker");
            body.splice(p..p + 1, [0xff, 0xfe]);
        }
        out.push(Case::json(format!("invalid utf-8: {name}"), body));
    }
    let mut full = render(&call_new(&tag())).into_bytes();
    let p = full.windows(4).position(|w| w == b"Asha").expect("name");
    full[p + 1] = 0x80;
    out.push(Case::json(
        "invalid utf-8: one bad byte in a valid call",
        full,
    ));
    let latin =
        b"{\"activityType\":\"call\",\"callSid\":\"CAX5\",\"callerName\":\"Jos\xe9\"}".to_vec();
    let mut c = Case::json("invalid utf-8: latin-1 declared as such", latin);
    c.content_type = Some("application/json; charset=iso-8859-1");
    out.push(c);

    // NUL bytes, raw and escaped.
    let sid = format!("CAHOSTILE{}", tag());
    for (name, body) in [
        (
            "raw NUL in callSid",
            format!("{{\"activityType\":\"call\",\"callSid\":\"{sid}\0X\"}}"),
        ),
        (
            "raw NUL in a name",
            render(&with(call_new(&tag()), "callerName", "\"A\0B\"".into())),
        ),
        (
            "NUL before the object",
            format!("\0{}", render(&call_new(&tag()))),
        ),
        (
            "NUL after the object",
            format!("{}\0", render(&call_new(&tag()))),
        ),
        (
            "NUL in a key",
            format!("{{\"call\0Sid\":\"{sid}Y\",\"activityType\":\"call\"}}"),
        ),
        ("only NULs", "\0".repeat(1000)),
        (
            "\\u0000 in a key",
            format!("{{\"call\\u0000Sid\":\"{sid}Z\",\"activityType\":\"call\"}}"),
        ),
        (
            "\\u0000 as a key",
            "{\"\\u0000\":1,\"activityType\":\"call\",\"callSid\":\"CAX6\"}".into(),
        ),
        (
            "\\u0000 in every string",
            render(&call_new(&tag())).replace("\":\"", "\":\"\\u0000"),
        ),
        (
            "\\u0000 in a tag",
            render(&with(
                call_new(&tag()),
                "tags",
                r#"["\u0000","a\u0000b","\u0000\u0000"]"#.into(),
            )),
        ),
        (
            "\\u0000 in sms content",
            render(&with(sms(&tag()), "content", "\"hi\\u0000there\"".into())),
        ),
        (
            "\\u0000 in a status",
            render(&with(status(&tag()), "status", "\"ring\\u0000ing\"".into())),
        ),
        (
            "\\u0000 callSid only",
            render(&with(call_new("x"), "callSid", "\"\\u0000\"".into())),
        ),
        (
            "\\u0000 in a nested object",
            render(&with(
                call_new(&tag()),
                "extra",
                r#"{"a":{"b":["\u0000"]}}"#.into(),
            )),
        ),
    ] {
        out.push(Case::json(format!("nul: {name}"), body));
    }

    // Deep nesting.
    for depth in [127usize, 129, 1000, 100_000] {
        out.push(Case::json(
            format!("deep: {depth} nested arrays"),
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        ));
        out.push(Case::json(
            format!("deep: {depth} unclosed arrays"),
            "[".repeat(depth),
        ));
    }
    for depth in [126usize, 127, 128, 129, 10_000] {
        let nested = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        out.push(Case::json(
            format!("deep: {depth} nested objects"),
            nested.clone(),
        ));
        out.push(Case::json(
            format!("deep: a call with {depth}-deep extra field"),
            render(&with(call_new(&tag()), "extra", nested)),
        ));
        out.push(Case::json(
            format!("deep: a call with {depth}-deep tags"),
            render(&with(
                call_new(&tag()),
                "tags",
                format!("{}\"VIP\"{}", "[".repeat(depth), "]".repeat(depth)),
            )),
        ));
    }

    // Huge numbers and values out of every range.
    let digits = |n: usize| -> String {
        let mut s = String::from("9");
        s.push_str(&"8".repeat(n - 1));
        s
    };
    let big_numbers: Vec<(String, String)> = vec![
        ("1e999999".into(), "1e999999".into()),
        ("-1e999999".into(), "-1e999999".into()),
        ("1e-999999".into(), "1e-999999".into()),
        ("2^31".into(), "2147483648".into()),
        ("2^63".into(), "9223372036854775808".into()),
        ("-2^63-1".into(), "-9223372036854775809".into()),
        ("1000 digits".into(), digits(1000)),
        ("100000 digits".into(), digits(100_000)),
        ("-0".into(), "-0".into()),
        ("1.5e308".into(), "1.5e308".into()),
    ];
    let number_fields: [(&str, Template, &str); 12] = [
        ("call", call_new, "duration"),
        ("call", call_new, "durationSeconds"),
        ("call", call_new, "billedMinutes"),
        ("call", call_new, "ringAnswerDuration"),
        ("call", call_new, "callCharge"),
        ("call", call_new, "dialCode"),
        ("call", call_new, "time"),
        ("call", call_new, "callQueue"),
        ("call", call_new, "tags"),
        ("sms", sms, "smsCharge"),
        ("sms", sms, "time"),
        ("status", status, "dateTime"),
    ];
    for (name, t, key) in number_fields {
        for (what, v) in &big_numbers {
            let value = if key == "tags" {
                format!("[{v}]")
            } else {
                v.clone()
            };
            out.push(Case::json(
                format!("huge number: {name}.{key} = {what}"),
                render(&with(t(&tag()), key, value)),
            ));
            // The same as a string: the reader reads numbers from strings too.
            if key != "tags" && v.len() < 2000 {
                out.push(Case::json(
                    format!("huge number: {name}.{key} = \"{what}\""),
                    render(&with(t(&tag()), key, q(v))),
                ));
            }
        }
    }
    for (name, t, key) in [
        ("call", call_new as Template, "duration"),
        ("call", call_new, "ringAnswerDuration"),
        ("call", call_new, "billedMinutes"),
        ("call", call_new, "callCharge"),
        ("sms", sms, "smsCharge"),
    ] {
        for v in [
            "99999999:59:59",
            "-00:01",
            "00:60",
            "::",
            "1:2:3:4",
            "NaN",
            "Infinity",
            "-Infinity",
            "1e100000",
            "0.00000000000000000000000000000000000001",
            "99999999999999999999999999999.99",
        ] {
            out.push(Case::json(
                format!("huge number: {name}.{key} = \"{v}\""),
                render(&with(t(&tag()), key, q(v))),
            ));
        }
    }
    for (name, t, key) in [
        ("call", call_new as Template, "time"),
        ("call", call_new, "startTime"),
        ("call", call_new, "endTime"),
        ("sms", sms, "time"),
        ("status", status, "dateTime"),
    ] {
        for v in [
            "9999-12-31T23:59:59.999Z",
            "+275760-09-13T00:00:00Z",
            "294277-01-01T00:00:00Z",
            "-004713-11-24T00:00:00Z",
            "-100000-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "2020-02-30T00:00:00Z",
            "2020-05-12T24:00:00Z",
            "2020-05-12T00:00:00+99:99",
            "99999999999999999",
            "-62135596800001",
            "1e20",
            "2020-05-12T00:53:57.688+0000 trailing",
        ] {
            out.push(Case::json(
                format!("huge number: {name}.{key} = \"{v}\""),
                render(&with(t(&tag()), key, q(v))),
            ));
        }
        out.push(Case::json(
            format!("huge number: {name}.{key} = 99999999999999999999"),
            render(&with(t(&tag()), key, "99999999999999999999".into())),
        ));
    }

    // Huge strings (near the limit, and past PostgreSQL's index row size for indexed columns).
    let near = limit.saturating_sub(1200);
    for (name, t, key, len) in [
        ("call", call_new as Template, "note", near),
        ("call", call_new, "callerName", near),
        ("call", call_new, "callSid", 3000),
        ("call", call_new, "callSid", 10_000),
        ("call", call_new, "callSid", near),
        ("call", call_new, "email", 5000),
        ("call", call_new, "fromNumber", 5000),
        ("call", call_new, "toNumber", 5000),
        ("call", call_new, "status", 5000),
        ("call", call_new, "callType", 5000),
        ("call-old", call_old, "from", 5000),
        ("sms", sms, "content", near),
        ("sms", sms, "from", 5000),
        ("sms", sms, "email", 5000),
        ("status", status, "callSid", 5000),
        ("status", status, "status", 5000),
        ("status", status, "agentEmail", 5000),
    ] {
        let v = alnum(&mut rng, len);
        out.push(Case::json(
            format!("huge string: {name}.{key} of {len} bytes"),
            render(&with(t(&tag()), key, q(&v))),
        ));
    }
    let long_tag = alnum(&mut rng, 5000);
    out.push(Case::json(
        "huge string: a 5000-byte tag",
        render(&with(call_new(&tag()), "tags", format!("[\"{long_tag}\"]"))),
    ));
    let many: Vec<String> = (0..2000).map(|i| format!("\"t{run:x}-{i}\"")).collect();
    out.push(Case::json(
        "huge string: 2000 distinct tags",
        render(&with(
            call_new(&tag()),
            "tags",
            format!("[{}]", many.join(",")),
        )),
    ));
    out.push(Case::json(
        "huge string: 20000 repeats of one tag",
        render(&with(
            call_new(&tag()),
            "tags",
            format!("[{}]", vec!["\"VIP\""; 20_000].join(",")),
        )),
    ));
    let emoji = "\u{1F4DE}".repeat(near / 4);
    out.push(Case::json(
        "huge string: sms content of 4-byte characters",
        render(&with(sms(&tag()), "content", q(&emoji))),
    ));
    let escapes = "\\u00e9".repeat(near / 6);
    out.push(Case::json(
        "huge string: note of \\u escapes",
        render(&with(call_new(&tag()), "note", q(&escapes))),
    ));
    let key = alnum(&mut rng, near.min(100_000));
    out.push(Case::json(
        "huge string: a 100000-byte key",
        render(&with(call_new(&tag()), "x", "1".into())).replacen("\"x\"", &q(&key), 1),
    ));
    let keys: Vec<String> = (0..15_000).map(|i| format!("\"k{i}\":{i}")).collect();
    out.push(Case::json(
        "huge string: 15000 keys",
        format!(
            "{{\"activityType\":\"call\",\"callSid\":\"CAHOSTILEK{}\",{}}}",
            tag(),
            keys.join(",")
        ),
    ));
    // Exactly at the limit: must be read (200), not refused.
    let exact = {
        let b = render(&call_new(&tag()));
        let pad = limit.saturating_sub(b.len());
        format!("{}{}}}", &b[..b.len() - 1], " ".repeat(pad))
    };
    out.push(Case::json(
        format!("huge string: a call of exactly {} bytes", exact.len()),
        exact,
    ));

    // Over the limit: 413.
    let over = |n: usize| -> Vec<u8> {
        let b = render(&call_new("over"));
        let mut v = b.as_bytes()[..b.len() - 1].to_vec();
        v.extend(std::iter::repeat_n(b' ', n.saturating_sub(b.len())));
        v.push(b'}');
        v
    };
    for (name, size, chunked, reset_ok) in [
        ("limit + 1", limit + 1, false, false),
        ("limit + 1, chunked", limit + 1, true, false),
        ("1 MiB", 1 << 20, false, false),
        ("1 MiB, chunked", 1 << 20, true, false),
        ("8 MiB, chunked", 8 << 20, true, false),
        (
            "20 MiB, chunked (past the drain limit)",
            20 << 20,
            true,
            true,
        ),
    ] {
        let mut c = Case::json(format!("over the limit: {name}"), over(size));
        c.chunked = chunked;
        c.reset_ok = reset_ok;
        out.push(c);
    }

    // Form bodies and other content types.
    let t = tag();
    for (name, ct, body) in [
        ("a call as form fields", Some(FORM), format!("activityType=call&callSid=CAFORM{t}&from=%2B14155550100&to=%2B442071830000&time=2020-05-12T00%3A53%3A57.688%2B0000&duration=08%3A10&tags=VIP")),
        ("an sms as form fields", Some(FORM), format!("activityType=sms&from=%2B1&to=%2B2&time=2020-05-12T00%3A53%3A57Z&content=form+{t}")),
        ("repeated fields", Some(FORM), format!("callSid=CAF{t}&callSid=CAG{t}&activityType=call")),
        ("bad percent escapes", Some(FORM), "%zz=%&callSid=%&activityType=%%".into()),
        ("empty names and values", Some(FORM), "=&=&&&=".into()),
        ("%00 in a value", Some(FORM), format!("activityType=call&callSid=CA%00{t}")),
        ("%FF%FE in a value", Some(FORM), format!("activityType=call&callSid=CA%FF%FE{t}")),
        ("json in a payload field", Some(FORM), "payload=%7B%22callSid%22%3A%22CAx%22%7D".into()),
        ("json body declared as form", Some(FORM), render(&call_new(&tag()))),
        ("empty form", Some(FORM), String::new()),
        ("form with charset", Some("application/x-www-form-urlencoded; charset=UTF-8"), format!("activityType=call&callSid=CAFC{t}")),
        ("5000 form fields", Some(FORM), (0..5000).map(|i| format!("f{i}={i}")).collect::<Vec<_>>().join("&")),
        ("multipart", Some("multipart/form-data; boundary=XyZ"), format!("--XyZ\r\nContent-Disposition: form-data; name=\"callSid\"\r\n\r\nCAMP{t}\r\n--XyZ--\r\n")),
        ("json as text/plain", Some("text/plain"), render(&call_new(&tag()))),
        ("xml", Some("application/xml"), "<call><callSid>CA1</callSid></call>".into()),
        ("json without a content type", None, render(&call_new(&tag()))),
        ("form without a content type", None, format!("activityType=call&callSid=CANCT{t}")),
        ("a garbage content type", Some("\u{e9}\u{ff}/;;;=\""), render(&call_new(&tag()))),
    ] {
        out.push(Case::new(format!("form: {name}"), ct, body.into_bytes()));
    }

    // Empty and non-object bodies.
    for (name, ct, body) in [
        ("empty, json", Some(JSON), ""),
        ("empty, no content type", None, ""),
        ("empty, form", Some(FORM), ""),
        ("whitespace", Some(JSON), "  \n\t\r "),
        ("null", Some(JSON), "null"),
        ("string", Some(JSON), "\"\""),
        ("number", Some(JSON), "0"),
        ("true", Some(JSON), "true"),
        ("empty array", Some(JSON), "[]"),
        ("empty object", Some(JSON), "{}"),
        ("array of an object", Some(JSON), "[{}]"),
        (
            "array of a call",
            Some(JSON),
            "[{\"activityType\":\"call\",\"callSid\":\"CAARR1\"}]",
        ),
        ("bom only", Some(JSON), "\u{feff}"),
        ("bom and an object", Some(JSON), "\u{feff}{}"),
    ] {
        out.push(Case::new(
            format!("empty: {name}"),
            ct,
            body.as_bytes().to_vec(),
        ));
    }

    // Kind confusion.
    for (name, body) in [
        (
            "activityType sms, type Call",
            render(&with(call_new(&tag()), "activityType", q("sms"))),
        ),
        (
            "activityType CALL with spaces",
            render(&with(call_old(&tag()), "activityType", q("  CALL "))),
        ),
        (
            "activityType a number",
            render(&with(call_old(&tag()), "activityType", "7".into())),
        ),
        (
            "unknown kind",
            render(&with(call_new(&tag()), "type", q("Voicemail"))),
        ),
        (
            "the connection test",
            render(&with(call_old(&tag()), "to", q("+11111111111"))),
        ),
        (
            "both shapes at once",
            render(&with(
                with(call_new(&tag()), "from", q("+1")),
                "activityType",
                q("call"),
            )),
        ),
        (
            "a status with sms fields",
            render(&with(status(&tag()), "smsType", q("Outgoing"))),
        ),
    ] {
        out.push(Case::json(format!("kind: {name}"), body));
    }

    for (name, t) in templates {
        out.push(Case::json(
            format!("valid: {name} (after)"),
            render(&t(&tag())),
        ));
    }
    out
}

// ------------------------------------------------------------------ sending

enum Outcome {
    Answer(u16, String),
    Error(String),
    TimedOut,
}

async fn connect(addr: &str) -> Result<SendRequest<Payload>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn send(
    sender: &mut Option<SendRequest<Payload>>,
    addr: &str,
    case: &Case,
    timeout: Duration,
) -> Outcome {
    let attempt = async {
        if sender.is_none() {
            *sender = Some(connect(addr).await?);
        }
        let s = sender.as_mut().expect("connected");
        let mut req = Request::post(PATH).header(HOST, addr);
        if let Some(ct) = case.content_type {
            // from_bytes: bytes past ASCII (obs-text) are allowed, as servers must take them.
            req = req.header(CONTENT_TYPE, HeaderValue::from_bytes(ct.as_bytes())?);
        }
        let req = req.body(Payload::of(case))?;
        s.ready().await?;
        let resp = s.send_request(req).await?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((code, String::from_utf8_lossy(&body).into_owned()))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((code, body))) => Outcome::Answer(code, body),
        Ok(Err(e)) => {
            *sender = None;
            Outcome::Error(format!("{e:#}"))
        }
        Err(_) => {
            *sender = None;
            Outcome::TimedOut
        }
    }
}

/// Sends every case over `conns` keep-alive connections; returns how many failed (a 5xx, no
/// answer within `timeout`, a transport error where an answer was due, or a server that is
/// not ready or does not store a valid event afterwards).
pub async fn run(
    addr: &str,
    limit: usize,
    conns: usize,
    timeout: Duration,
    verbose: bool,
) -> Result<u64> {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as u32;
    let cases = Arc::new(cases(limit, run));
    let bytes: usize = cases.iter().map(|c| c.body.len()).sum();
    println!(
        "hostile: {} bodies ({:.1} MiB) to {addr} over {conns} connections, MAX_BODY_BYTES={limit}",
        cases.len(),
        bytes as f64 / 1048576.0
    );
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<Option<Outcome>>>> =
        Arc::new(Mutex::new((0..cases.len()).map(|_| None).collect()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (cases, next, results, addr) = (
            cases.clone(),
            next.clone(),
            results.clone(),
            addr.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut sender = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let mut outcome = send(&mut sender, &addr, case, timeout).await;
                if let Outcome::Error(_) = outcome {
                    // The keep-alive connection may have been closed after an earlier
                    // refusal: try once more on a fresh one.
                    outcome = send(&mut sender, &addr, case, timeout).await;
                }
                results.lock().await[i] = Some(outcome);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let results = std::mem::take(&mut *results.lock().await);

    let mut failures = 0u64;
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    let mut by_category: BTreeMap<&str, (u64, BTreeMap<u16, u64>)> = BTreeMap::new();
    let (mut c5xx, mut errors, mut timeouts, mut resets_allowed) = (0u64, 0u64, 0u64, 0u64);
    for (case, outcome) in cases.iter().zip(&results) {
        let category = case.label.split(':').next().unwrap_or("?");
        let entry = by_category.entry(category).or_default();
        entry.0 += 1;
        match outcome {
            Some(Outcome::Answer(code, body)) => {
                if verbose {
                    println!(
                        "hostile: answer: {} -> {code} {}",
                        case.label,
                        &body[..body.len().min(240)]
                    );
                }
                *codes.entry(*code).or_default() += 1;
                *entry.1.entry(*code).or_default() += 1;
                if *code >= 500 {
                    c5xx += 1;
                    failures += 1;
                    println!(
                        "hostile: FAIL {} -> {code} {}",
                        case.label,
                        &body[..body.len().min(300)]
                    );
                }
                let expected = if case.label.starts_with("valid") {
                    Some(200)
                } else if case.label.starts_with("over the limit") {
                    Some(413)
                } else {
                    None
                };
                if expected.is_some_and(|e| e != *code) && *code < 500 {
                    println!(
                        "hostile: note: {} -> {code} (expected {}) {}",
                        case.label,
                        expected.unwrap_or(0),
                        &body[..body.len().min(200)]
                    );
                }
            }
            Some(Outcome::Error(e)) if case.reset_ok => {
                resets_allowed += 1;
                println!(
                    "hostile: {} -> connection closed (allowed: {e})",
                    case.label
                );
            }
            Some(Outcome::Error(e)) => {
                errors += 1;
                failures += 1;
                println!("hostile: FAIL {} -> transport error: {e}", case.label);
            }
            Some(Outcome::TimedOut) => {
                timeouts += 1;
                failures += 1;
                println!(
                    "hostile: FAIL {} -> no answer within {timeout:?}",
                    case.label
                );
            }
            None => {
                failures += 1;
                println!("hostile: FAIL {} -> never sent", case.label);
            }
        }
    }
    for (category, (n, codes)) in &by_category {
        let list: Vec<String> = codes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("hostile: {category:<14} {n:>4} bodies: {}", list.join(" "));
    }

    // The server must still be ready and still store a valid event.
    let ready = match crate::load::wait_until(addr, "/readyz", false, Duration::from_secs(10), None)
        .await
    {
        Ok(()) => 200,
        Err(e) => {
            println!("hostile: FAIL /readyz after the hostile bodies: {e:#}");
            failures += 1;
            0
        }
    };
    let probe = Case::json("probe", render(&call_new(&format!("{run:08x}PROBE"))));
    let mut sender = None;
    let probe_code = match send(&mut sender, addr, &probe, timeout).await {
        Outcome::Answer(code, body) => {
            if code != 200 {
                println!("hostile: FAIL a valid call after the hostile bodies -> {code} {body}");
                failures += 1;
            }
            code
        }
        Outcome::Error(e) => {
            println!("hostile: FAIL a valid call after the hostile bodies -> {e}");
            failures += 1;
            0
        }
        Outcome::TimedOut => {
            println!("hostile: FAIL a valid call after the hostile bodies -> no answer");
            failures += 1;
            0
        }
    };
    let list: Vec<String> = codes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "hostile: {} bodies in {elapsed:.1}s: {} | 5xx={c5xx} transport_errors={errors} \
         timeouts={timeouts} closed_past_drain_limit={resets_allowed} | afterwards /readyz {ready}, \
         a valid call {probe_code}",
        cases.len(),
        list.join(" ")
    );
    println!(
        "RESULT bodies={} c5xx={c5xx} errors={errors} timeouts={timeouts} readyz={ready} \
         probe={probe_code} failures={failures} codes={}",
        cases.len(),
        list.join(",")
    );
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_a_few_hundred_cases_and_the_valid_ones_are_json() {
        let cases = cases(262_144, 7);
        assert!(cases.len() > 300, "{}", cases.len());
        for c in cases.iter().filter(|c| c.label.starts_with("valid")) {
            let v: serde_json::Value = serde_json::from_slice(&c.body).expect(&c.label);
            assert!(v.is_object());
        }
        let exact = cases
            .iter()
            .find(|c| c.label.contains("exactly"))
            .expect("the exact-limit case");
        assert_eq!(exact.body.len(), 262_144);
        serde_json::from_slice::<serde_json::Value>(&exact.body).expect("exact is JSON");
        for c in cases
            .iter()
            .filter(|c| c.label.starts_with("over the limit"))
        {
            assert!(c.body.len() > 262_144, "{}", c.label);
        }
        for c in cases.iter().filter(|c| c.label.starts_with("wrong type")) {
            // serde_json without arbitrary_precision refuses 1e400; everything else parses.
            if !c.label.contains("1e400") {
                serde_json::from_slice::<serde_json::Value>(&c.body).expect(&c.label);
            }
        }
    }
}
