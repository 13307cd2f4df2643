//! Realistic CallHippo payloads, each one unique, built ahead of the timed run.
//!
//! Mix: 60 % call logs (half in the vendor's older shape, half in the newer one, 0 to 3
//! tags from a pool of 20 names), 20 % SMS (unique by a reference at the end of the
//! text), 20 % call status notifications (unique by `dateTime`).

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

/// What a connection sent, enough to find the row it must have made.
#[derive(Debug, Clone)]
pub enum Key {
    /// `calls.call_sid`, and how many distinct tags the call carries.
    Call { sid: String, tags: u8 },
    /// The reference that ends the SMS text (unique per message).
    Sms { reference: String },
    /// `call_status (call_sid, status, occurred_at)`; `status` as the service stores it.
    Status {
        sid: String,
        status: &'static str,
        ms: i64,
    },
}

pub struct Event {
    pub body: Bytes,
    pub key: Key,
}

pub const TAG_POOL: [&str; 20] = [
    "VIP",
    "Follow-up",
    "Sales",
    "Support",
    "Billing",
    "Hot lead",
    "Renewal",
    "Complaint",
    "Refund",
    "Demo",
    "Onboarding",
    "Churn risk",
    "Upsell",
    "Partner",
    "Spam",
    "Wrong number",
    "Callback",
    "Escalated",
    "Feedback",
    "Enterprise",
];

const AGENTS: [(&str, &str); 8] = [
    ("Asha.Patel@Example.com", "Asha Patel"),
    ("ben.cole@example.com", "Ben Cole"),
    ("Carla.Diaz@example.com", "Carla Diaz"),
    ("dev.iyer@example.com", "Dev Iyer"),
    ("Emma.Stone@Example.COM", "Emma Stone"),
    ("farid.k@example.com", "Farid Khan"),
    ("gina.lee@example.com", "Gina Lee"),
    ("hugo.m@example.com", "Hugo Martin"),
];

const COUNTRIES: [(&str, &str); 5] = [
    ("1", "United States"),
    ("44", "United Kingdom"),
    ("91", "India"),
    ("61", "Australia"),
    ("49", "Germany"),
];

/// Call outcomes as the vendor spells them (the service normalizes them).
const CALL_STATUS: [&str; 6] = [
    "Completed",
    "Completed",
    "Missed",
    "No Answer",
    "Voicemail",
    "Rejected",
];

/// Status notification words as sent, and as the service stores them (docs/reference.md §4).
const STATUS_EVENTS: [(&str, &str); 5] = [
    ("ringing", "ringing"),
    ("answered", "answered"),
    ("In-Progress", "in_progress"),
    ("completed", "completed"),
    ("No Answer", "no_answer"),
];

const SMS_TEXT: [&str; 4] = [
    "Hi, thanks for your call today. Your ticket has been created and an agent will get back to you within 24 hours.",
    "Reminder: your demo is scheduled for tomorrow at 10:00. Reply STOP to opt out.",
    "Your order has shipped and should arrive in 3-5 business days.",
    "We tried to reach you about your renewal. Call us back at your convenience.",
];

/// xorshift64*: cheap, good enough for picking payload variants.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
}

/// The generator of one connection: its events never collide with another's.
pub struct Gen {
    run: u32,
    conn: u32,
    seq: u64,
    calls: u64,
    base_ms: i64,
    rng: Rng,
    buf: BytesMut,
    scratch: String,
}

impl Gen {
    pub fn new(run: u32, conn: u32, base_ms: i64) -> Self {
        Gen {
            run,
            conn,
            seq: 0,
            calls: 0,
            base_ms,
            rng: Rng::new(((run as u64) << 32) ^ (conn as u64 + 1)),
            buf: BytesMut::with_capacity(1 << 20),
            scratch: String::with_capacity(2048),
        }
    }

    fn sid(&self, n: u64) -> String {
        // Like the vendor's: "CA" and 32 hex digits; run, connection and number make it unique.
        let pad = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.conn as u64) & 0xffff_ffff_ffff;
        format!(
            "CA{:08x}{:04x}{:08x}{:012x}",
            self.run, self.conn, n as u32, pad
        )
    }

    /// The next unique event of this connection.
    pub fn next_event(&mut self) -> Event {
        let seq = self.seq;
        self.seq += 1;
        // A time unique per (connection, event): dateTime of status events is part of their key.
        let ms = self.base_ms + seq as i64 * 1000 + self.conn as i64;
        let roll = self.rng.below(10);
        self.scratch.clear();
        let key = if roll < 6 {
            self.call(ms)
        } else if roll < 8 {
            self.sms(seq, ms)
        } else {
            self.status(ms)
        };
        if self.buf.capacity() - self.buf.len() < self.scratch.len() {
            self.buf = BytesMut::with_capacity((1 << 20).max(self.scratch.len()));
        }
        self.buf.extend_from_slice(self.scratch.as_bytes());
        let body = self.buf.split().freeze();
        Event { body, key }
    }

    fn call(&mut self, ms: i64) -> Key {
        let n = self.calls;
        self.calls += 1;
        let sid = self.sid(n);
        let r = &mut self.rng;
        let (email, name) = AGENTS[r.below(AGENTS.len() as u64) as usize];
        let (dial, country) = COUNTRIES[r.below(COUNTRIES.len() as u64) as usize];
        let status = CALL_STATUS[r.below(CALL_STATUS.len() as u64) as usize];
        let talk = if status == "Completed" {
            5 + r.below(1800)
        } else {
            0
        };
        let ring = 1 + r.below(40);
        let outgoing = r.below(2) == 0;
        let ntags = r.below(4) as usize;
        let mut tags: [usize; 3] = [0; 3];
        let mut count = 0;
        while count < ntags {
            let t = r.below(TAG_POOL.len() as u64) as usize;
            if !tags[..count].contains(&t) {
                tags[count] = t;
                count += 1;
            }
        }
        let from = 14_155_550_000u64 + r.below(10_000);
        let to = 442_071_830_000u64 + r.below(10_000);
        let newer = r.below(2) == 0;
        let charge_cents = r.below(300);
        let start = ms - (talk as i64 + ring as i64) * 1000;
        let s = &mut self.scratch;
        let call_type = if outgoing { "Outgoing" } else { "Incoming" };
        if newer {
            let _ = write!(
                s,
                "{{\"type\":\"Call\",\"callSid\":\"{sid}\",\"callType\":\"{call_type}\",\
                 \"fromNumber\":\"+{from}\",\"toNumber\":\"+{to}\",\"dialCode\":{dial},\
                 \"countryName\":\"{country}\",\"status\":\"{status}\",\
                 \"statusReason\":\"{}\",\"duration\":\"{:02}:{:02}\",\"durationSeconds\":{talk},\
                 \"ringAnswerDuration\":\"00:{:02}\",\"billedMinutes\":\"{}\",\
                 \"callCharge\":{}.{:02},\"time\":\"",
                if talk > 0 {
                    "Call ended normally"
                } else {
                    "Agent did not pick up"
                },
                talk / 60,
                talk % 60,
                ring,
                talk.div_ceil(60),
                charge_cents / 100,
                charge_cents % 100,
            );
            iso_z(s, ms);
            s.push_str("\",\"startTime\":\"");
            iso_z(s, start);
            s.push_str("\",\"endTime\":\"");
            iso_z(s, ms);
            let _ = write!(
                s,
                "\",\"email\":\"{email}\",\"callerName\":\"{name}\",\
                 \"adminEmail\":\"Owner@Example.com\",\"answeredDevice\":\"{}\",\
                 \"hangupBy\":\"{}\",\"callQueue\":\"{}\",\"reason\":\"\",\"tags\":[",
                ["Web", "iOS", "Android"][(from % 3) as usize],
                if to.is_multiple_of(2) {
                    "Agent"
                } else {
                    "Client"
                },
                from & 1 == 0,
            );
            push_tags(s, &tags[..ntags]);
            s.push_str(
                "],\"dispositions\":[\"Callback requested\"],\"recordingUrl\":null,\"note\":\"\"}",
            );
        } else {
            let _ = write!(
                s,
                "{{ \"activityType\": \"call\", \"from\": \"+{from}\", \"to\": \"+{to}\", \
                 \"dialCode\": \"{dial}\", \"callType\": \"{call_type}\", \
                 \"duration\": \"{:02}:{:02}\", \"status\": \"{status}\", \"time\": \"",
                talk / 60,
                talk % 60,
            );
            iso_offset(s, ms);
            let _ = write!(
                s,
                "\", \"callCharge\": \"{}.{:03}\", \"email\": \"{email}\", \
                 \"callerName\": \"{name}\", \"adminEmail\": \"admin@example.com\", \
                 \"callSid\": \"{sid}\", \"startTime\": \"",
                charge_cents / 100,
                charge_cents % 100 * 10,
            );
            iso_offset(s, start);
            s.push_str("\", \"endTime\": \"");
            iso_offset(s, ms);
            let _ = write!(
                s,
                "\", \"note\": \"Customer asked about pricing\", \
                 \"recordingUrl\": \"https://recordings.example.com/{sid}.mp3\", \
                 \"countryName\": \"{country}\", \"answeredDevice\":\"web\", \
                 \"ringAnswerDuration\": \"00:{ring:02}\", \"billedMinutes\": {}, \
                 \"hangupBy\": \"Agent\", \"tags\": [",
                talk.div_ceil(60),
            );
            push_tags(s, &tags[..ntags]);
            s.push_str("], \"callQueue\": false, \"reason\":\"\" }");
        }
        Key::Call {
            sid,
            tags: ntags as u8,
        }
    }

    fn sms(&mut self, seq: u64, ms: i64) -> Key {
        let r = &mut self.rng;
        let (email, name) = AGENTS[r.below(AGENTS.len() as u64) as usize];
        let text = SMS_TEXT[r.below(SMS_TEXT.len() as u64) as usize];
        let outgoing = r.below(3) != 0;
        let from = 14_155_550_000u64 + r.below(10_000);
        let to = 442_071_830_000u64 + r.below(10_000);
        let reference = format!("CHB{:08x}-{}-{}", self.run, self.conn, seq);
        let s = &mut self.scratch;
        let _ = write!(
            s,
            "{{ \"activityType\": \"sms\", \"content\": \"{text} Ref {reference}\", \
             \"from\": \"+{from}\", \"to\": \"+{to}\", \"smsType\": \"{}\", \
             \"status\": \"Completed\", \"time\": \"",
            if outgoing { "Outgoing" } else { "Incoming" },
        );
        iso_offset(s, ms);
        let _ = write!(
            s,
            "\", \"smsCharge\": \"0.040\", \"email\": \"{email}\", \"smsSendBy\": \"{name}\", \
             \"adminEmail\": \"admin@example.com\" }}"
        );
        Key::Sms { reference }
    }

    fn status(&mut self, ms: i64) -> Key {
        // Status notifications usually come for the call being logged now, often before its log.
        let sid = self.sid(self.calls);
        let r = &mut self.rng;
        let (sent, stored) = STATUS_EVENTS[r.below(STATUS_EVENTS.len() as u64) as usize];
        let (email, _) = AGENTS[r.below(AGENTS.len() as u64) as usize];
        let from = 17_000_000_000u64 + r.below(1_000_000_000);
        let to = 13_000_000_000u64 + r.below(1_000_000_000);
        let agent = r.next_u64();
        let s = &mut self.scratch;
        let _ = write!(
            s,
            "{{ \"agentEmail\": \"{email}\", \"callType\": \"Outgoing\", \
             \"fromNumber\": \"+{from}\", \"toNumber\": \"+{to}\", \
             \"agentId\": \"610{agent:016x}8f3\", \"callSid\": \"{sid}\", \"dateTime\": \""
        );
        iso_z(s, ms);
        let _ = write!(s, "\", \"dialCode\": \"1\", \"status\": \"{sent}\" }}");
        Key::Status {
            sid,
            status: stored,
            ms,
        }
    }
}

fn push_tags(s: &mut String, tags: &[usize]) {
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('"');
        s.push_str(TAG_POOL[*t]);
        s.push('"');
    }
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn write_ts(s: &mut String, ms: i64, zone: &str) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let _ = write!(
        s,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}{zone}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
}

/// `2025-06-23T13:13:50.000Z` (newer payloads).
pub fn iso_z(s: &mut String, ms: i64) {
    write_ts(s, ms, "Z");
}

/// `2020-05-12T00:53:57.688+0000` (the vendor's documented shape).
pub fn iso_offset(s: &mut String, ms: i64) {
    write_ts(s, ms, "+0000");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_formatted_like_the_vendor() {
        let mut s = String::new();
        iso_offset(&mut s, 1_589_244_837_688);
        assert_eq!(s, "2020-05-12T00:53:57.688+0000");
        s.clear();
        iso_z(&mut s, 0);
        assert_eq!(s, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn events_are_json_and_unique() {
        let mut g = Gen::new(7, 3, 1_700_000_000_000);
        let mut keys = std::collections::HashSet::new();
        for _ in 0..2000 {
            let e = g.next_event();
            let text = std::str::from_utf8(&e.body).unwrap();
            let v: serde_json::Value = serde_json::from_str(text).expect(text);
            assert!(v.is_object(), "{text}");
            let k = match e.key {
                Key::Call { sid, tags } => {
                    assert!(tags <= 3);
                    assert!(text.contains(&sid));
                    format!("c{sid}")
                }
                Key::Sms { reference } => format!("s{reference}"),
                Key::Status { sid, status, ms } => format!("t{sid}{status}{ms}"),
            };
            assert!(keys.insert(k));
        }
    }
}
