//! One record of a segment: `"CHS1" | length u32 | crc32 u32 | payload`, the payload being
//! the delivery time (µs), the Content-Type and the body. A record whose length or CRC does
//! not check is where a torn write (a crash mid-append) begins.

use chrono::DateTime;

use super::SpooledEvent;

pub(super) const MAGIC: &[u8; 4] = b"CHS1";
pub(super) const HEADER: usize = 12;

/// The records of `data` that check, with the offset of each, and the length they cover.
pub(super) fn records(data: &[u8]) -> (Vec<(u64, Vec<u8>)>, usize) {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= HEADER {
        let header = &data[pos..pos + HEADER];
        if &header[..4] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let Some(payload) = data.get(pos + HEADER..pos + HEADER + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        records.push((pos as u64, payload.to_vec()));
        pos += HEADER + len;
    }
    (records, pos)
}

pub(super) fn encode(event: &SpooledEvent) -> Vec<u8> {
    let ct = event.content_type.as_deref().unwrap_or("").as_bytes();
    let ct = &ct[..ct.len().min(u16::MAX as usize)];
    let mut payload = Vec::with_capacity(10 + ct.len() + event.body.len());
    payload.extend_from_slice(&event.received_at.timestamp_micros().to_le_bytes());
    payload.extend_from_slice(&(ct.len() as u16).to_le_bytes());
    payload.extend_from_slice(ct);
    payload.extend_from_slice(&event.body);
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(MAGIC);
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    record
}

pub(super) fn decode(payload: &[u8]) -> Option<SpooledEvent> {
    let micros = i64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let ct_len = u16::from_le_bytes(payload.get(8..10)?.try_into().ok()?) as usize;
    let ct = std::str::from_utf8(payload.get(10..10 + ct_len)?).ok()?;
    Some(SpooledEvent {
        received_at: DateTime::from_timestamp_micros(micros)?,
        content_type: (!ct.is_empty()).then(|| ct.to_owned()),
        body: bytes::Bytes::copy_from_slice(payload.get(10 + ct_len..)?),
    })
}
