-- pgbench script for bench/run: the rows ONE call event makes, in ONE transaction.
-- One raw_events row (realistic jsonb payload, unique body_sha256), one calls row (unique
-- call_sid), two tags upserted with ON CONFLICT DO NOTHING and two call_tags rows pointing at
-- their ids. Keys start with PGB- so nothing collides with the rows the service writes.
-- Run with -M prepared (as the service's driver does): :variables become parameters.
\set r random(1, 9000000000000000000)
\set t1 random(0, 18)
\set t2 random(:t1 + 1, 19)
BEGIN;
INSERT INTO raw_events (kind, body_sha256, payload, content_type, received_at, last_received_at)
VALUES ('call',
        sha256(convert_to('PGB-' || :client_id::text || '-' || :r::text || clock_timestamp()::text, 'UTF8')),
        replace('{ "activityType": "call", "from": "+14155551234", "to": "+442071834567", "dialCode": "44", "callType": "Outgoing", "duration": "08:10", "status": "Completed", "time": "2026-11-23T09:53:57.688+0000", "callCharge": "0.040", "email": "asha.patel@example.com", "callerName": "Asha Patel", "adminEmail": "admin@example.com", "callSid": "__SID__", "startTime": "2026-11-23T09:45:45.688+0000", "endTime": "2026-11-23T09:53:57.688+0000", "note": "Customer asked about pricing", "recordingUrl": "https://recordings.example.com/__SID__.mp3", "countryName": "United Kingdom", "answeredDevice":"web", "ringAnswerDuration": "00:12", "billedMinutes": 9, "hangupBy": "Agent", "tags": ["Sales", "VIP"], "callQueue": false, "reason":"" }',
                '__SID__', 'PGB-' || :client_id::text || '-' || :r::text)::jsonb,
        'application/json', now(), now());
INSERT INTO calls (call_sid, call_type, from_number, to_number, dial_code, country_name, status,
                   duration_seconds, ring_seconds, billed_minutes, call_charge, logged_at,
                   started_at, ended_at, agent_email, agent_name, admin_email, note,
                   recording_url, answered_device, hangup_by, call_queue, reason,
                   received_at, updated_at)
VALUES ('PGB-' || :client_id::text || '-' || :r::text, 'outgoing', '+14155551234', '+442071834567',
        '44', 'United Kingdom', 'completed', 490, 12, 9, 0.040, now(), now() - interval '490 seconds',
        now(), 'asha.patel@example.com', 'Asha Patel', 'admin@example.com',
        'Customer asked about pricing', 'https://recordings.example.com/x.mp3', 'web', 'agent',
        false, NULL, now(), now());
INSERT INTO tags (name) VALUES ('PGB tag ' || :t1::text), ('PGB tag ' || :t2::text)
ON CONFLICT (name) DO NOTHING;
INSERT INTO call_tags (call_sid, tag_id)
SELECT 'PGB-' || :client_id::text || '-' || :r::text, id FROM tags
WHERE name IN ('PGB tag ' || :t1::text, 'PGB tag ' || :t2::text);
END;
