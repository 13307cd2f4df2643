-- bench/history: seeds a year of a 200-agent account into a migrated database, by plain SQL
-- (as a bulk import would: the triggers note what changed, and `rollup` catches up).
-- psql variables: calls (how many calls). Per call: 3 status events and about 1.5 tags; an
-- SMS for every 4 calls; a raw event for every call, status event and SMS. Times run
-- through the year in order, as live ingestion writes them; keys are digests, as CallHippo's
-- are random.
\set ON_ERROR_STOP on
SELECT set_config('seed.calls', :'calls', false);

-- 50 tags, the first named as the cookbook's tag query asks (about 3 % of the calls have it).
INSERT INTO tags (name) SELECT CASE WHEN g = 1 THEN 'VIP' ELSE 'tag-' || g END
  FROM generate_series(1, 50) g ON CONFLICT DO NOTHING;

DO $seed$
DECLARE
    total  bigint := current_setting('seed.calls')::bigint;
    chunk  bigint := 50000;
    done   bigint := 0;
    span   interval := interval '365 days';
    origin timestamptz := now() - interval '365 days';
BEGIN
    WHILE done < total LOOP
        CREATE TEMP TABLE seed_calls ON COMMIT DROP AS
        SELECT i,
               'CA' || md5('call-' || i) AS call_sid,
               origin + span * (i::float8 / total) AS started_at,
               CASE WHEN h % 10 < 6 THEN 'incoming' ELSE 'outgoing' END AS call_type,
               CASE WHEN h % 10 < 6 THEN
                        (ARRAY['completed','completed','completed','completed','completed','completed',
                               'completed','missed','missed','no_answer','voicemail','rejected'])[1 + (h / 10) % 12]
                    ELSE (ARRAY['completed','completed','completed','no_answer','busy'])[1 + (h / 10) % 5]
               END AS status,
               '+1555' || lpad(((h / 7) % 200000)::text, 7, '0') AS customer,
               '+1800555' || lpad((i % 20)::text, 4, '0') AS virtual_number,
               'agent' || (i % 200) || '@example.com' AS agent_email,
               'Agent ' || (i % 200) AS agent_name,
               (h / 13) % 40 AS ring_seconds,
               30 + (h / 17) % 870 AS duration_seconds,
               h
          FROM (SELECT i, abs(hashint8(i)) AS h
                  FROM generate_series(done + 1, least(done + chunk, total)) AS i) AS x;

        INSERT INTO calls (call_sid, call_type, from_number, to_number, status, duration_seconds,
                           ring_seconds, billed_minutes, call_charge, logged_at, started_at, ended_at,
                           agent_email, agent_name, country_name, virtual_number, received_at, updated_at)
        SELECT call_sid, call_type,
               CASE WHEN call_type = 'incoming' THEN customer ELSE virtual_number END,
               CASE WHEN call_type = 'incoming' THEN virtual_number ELSE customer END,
               status,
               CASE WHEN status = 'completed' THEN duration_seconds ELSE 0 END,
               ring_seconds,
               CASE WHEN status = 'completed' THEN 1 + duration_seconds / 60 ELSE 0 END,
               CASE WHEN status = 'completed' THEN round((1 + duration_seconds / 60) * 0.013, 3) ELSE 0 END,
               started_at, started_at, started_at + make_interval(secs => ring_seconds + duration_seconds),
               agent_email, agent_name, 'United States', virtual_number, started_at, started_at
          FROM seed_calls;

        INSERT INTO call_tags (call_sid, tag_id)
        SELECT DISTINCT c.call_sid, t.id
          FROM seed_calls c
          CROSS JOIN LATERAL generate_series(1, (c.h % 4)::int) AS k
          JOIN tags t ON t.name = CASE WHEN (c.h / (k * 3 + 1)) % 50 = 0 THEN 'VIP'
                                       ELSE 'tag-' || (1 + (c.h / (k * 3 + 1)) % 50) END;

        INSERT INTO call_status (call_sid, status, occurred_at, call_type, from_number, to_number,
                                 agent_email, received_at, updated_at)
        SELECT c.call_sid, s.status, c.started_at + s.after, c.call_type, c.customer, c.virtual_number,
               c.agent_email, c.started_at + s.after, c.started_at + s.after
          FROM seed_calls c
          CROSS JOIN LATERAL (VALUES ('ringing', interval '0'),
                                     (CASE WHEN c.status = 'completed' THEN 'answered' ELSE c.status END,
                                      make_interval(secs => c.ring_seconds)),
                                     ('hangup', make_interval(secs => c.ring_seconds + c.duration_seconds)))
                             AS s(status, after);

        INSERT INTO sms (sms_key, sms_type, from_number, to_number, status, content, logged_at,
                         sms_charge, agent_email, agent_name, received_at, updated_at)
        SELECT md5('sms-' || i), CASE WHEN h % 2 = 0 THEN 'outgoing' ELSE 'incoming' END,
               virtual_number, customer, 'delivered', 'Thanks for calling! Ref ' || i,
               started_at + interval '1 minute', 0.0075, agent_email, agent_name,
               started_at + interval '1 minute', started_at + interval '1 minute'
          FROM seed_calls WHERE i % 4 = 0;

        INSERT INTO raw_events (kind, body_sha256, payload, received_at, last_received_at, event_at)
        SELECT 'call', sha256(convert_to(call_sid, 'UTF8')),
               jsonb_build_object('activityType', 'call', 'callSid', call_sid, 'callType', call_type,
                                  'from', customer, 'to', virtual_number, 'status', status,
                                  'startTime', started_at, 'email', agent_email, 'callerName', agent_name,
                                  'duration', duration_seconds),
               started_at, started_at, started_at
          FROM seed_calls
        UNION ALL
        SELECT 'call_status', sha256(convert_to(call_sid || '/' || k, 'UTF8')),
               jsonb_build_object('callSid', call_sid, 'status', k, 'dateTime', started_at,
                                  'fromNumber', customer, 'toNumber', virtual_number, 'agentEmail', agent_email),
               started_at, started_at, started_at
          FROM seed_calls CROSS JOIN generate_series(1, 3) AS k
        UNION ALL
        SELECT 'sms', sha256(convert_to('sms-' || i, 'UTF8')),
               jsonb_build_object('activityType', 'sms', 'from', virtual_number, 'to', customer,
                                  'content', 'Thanks for calling! Ref ' || i, 'time', started_at),
               started_at, started_at, started_at
          FROM seed_calls WHERE i % 4 = 0;

        done := least(done + chunk, total);
        COMMIT;
        RAISE NOTICE 'seeded % of % calls', done, total;
    END LOOP;
END
$seed$;

ANALYZE;
