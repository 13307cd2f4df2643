WITH raw AS (INSERT INTO raw_events AS r (kind, body_sha256, payload, body, body_bytes, content_type, error, received_at, last_received_at, deliveries, source, event_at)
         SELECT x.kind, x.body_sha256, x.payload::jsonb AS payload, x.body, x.body_bytes, x.content_type, x.error, x.received_at, x.last_received_at, x.deliveries, x.source, x.event_at
  FROM (SELECT unnest($1::text[]) AS kind,
                unnest($2::bytea[]) AS body_sha256,
                unnest($3::text[]) AS payload,
                unnest($4::text[]) AS body,
                unnest($5::bytea[]) AS body_bytes,
                unnest($6::text[]) AS content_type,
                unnest($7::text[]) AS error,
                unnest($8::timestamptz[]) AS received_at,
                unnest($9::timestamptz[]) AS last_received_at,
                unnest($10::integer[]) AS deliveries,
                unnest($11::text[]) AS source,
                unnest($12::timestamptz[]) AS event_at) AS x
         ON CONFLICT (body_sha256) DO UPDATE
            SET last_received_at = greatest(r.last_received_at, excluded.last_received_at),
                received_at      = least(r.received_at, excluded.received_at),
                deliveries       = r.deliveries + excluded.deliveries,
                kind             = excluded.kind,
                error            = excluded.error,
                event_at         = coalesce(excluded.event_at, r.event_at) RETURNING 1),
         calls_in AS (SELECT x.call_sid, x.call_type, x.from_number, x.to_number, x.dial_code, x.country_name, x.status, x.status_reason, x.duration_seconds, x.ring_seconds, x.billed_minutes, x.call_charge::numeric AS call_charge, x.logged_at, x.started_at, x.ended_at, x.agent_email, x.agent_name, x.admin_email, x.note, x.recording_url, x.answered_device, x.hangup_by, x.call_queue, x.reason, x.dispositions::text[] AS dispositions, x.agent_id, x.campaign_id, x.crm_unique_id, x.virtual_number, x.parse_warnings::jsonb AS parse_warnings, x.first_at, x.last_at
  FROM (SELECT unnest($13::text[]) AS call_sid,
                unnest($14::text[]) AS call_type,
                unnest($15::text[]) AS from_number,
                unnest($16::text[]) AS to_number,
                unnest($17::text[]) AS dial_code,
                unnest($18::text[]) AS country_name,
                unnest($19::text[]) AS status,
                unnest($20::text[]) AS status_reason,
                unnest($21::integer[]) AS duration_seconds,
                unnest($22::integer[]) AS ring_seconds,
                unnest($23::integer[]) AS billed_minutes,
                unnest($24::text[]) AS call_charge,
                unnest($25::timestamptz[]) AS logged_at,
                unnest($26::timestamptz[]) AS started_at,
                unnest($27::timestamptz[]) AS ended_at,
                unnest($28::text[]) AS agent_email,
                unnest($29::text[]) AS agent_name,
                unnest($30::text[]) AS admin_email,
                unnest($31::text[]) AS note,
                unnest($32::text[]) AS recording_url,
                unnest($33::text[]) AS answered_device,
                unnest($34::text[]) AS hangup_by,
                unnest($35::boolean[]) AS call_queue,
                unnest($36::text[]) AS reason,
                unnest($37::text[]) AS dispositions,
                unnest($38::text[]) AS agent_id,
                unnest($39::text[]) AS campaign_id,
                unnest($40::text[]) AS crm_unique_id,
                unnest($41::text[]) AS virtual_number,
                unnest($42::text[]) AS parse_warnings,
                unnest($43::timestamptz[]) AS first_at,
                unnest($44::timestamptz[]) AS last_at) AS x),
         calls_new AS (
             INSERT INTO calls (call_sid, call_type, from_number, to_number, dial_code, country_name, status, status_reason, duration_seconds, ring_seconds, billed_minutes, call_charge, logged_at, started_at, ended_at, agent_email, agent_name, admin_email, note, recording_url, answered_device, hangup_by, call_queue, reason, dispositions, agent_id, campaign_id, crm_unique_id, virtual_number, parse_warnings, received_at, updated_at)
             SELECT call_sid, call_type, from_number, to_number, dial_code, country_name, status, status_reason, duration_seconds, ring_seconds, billed_minutes, call_charge, logged_at, started_at, ended_at, agent_email, agent_name, admin_email, note, recording_url, answered_device, hangup_by, call_queue, reason, dispositions, agent_id, campaign_id, crm_unique_id, virtual_number, parse_warnings, first_at, first_at FROM calls_in
             
             ON CONFLICT (call_sid) DO NOTHING
             RETURNING call_sid),
         -- ON CONFLICT although these calls were inserted by this very statement: links
         -- left behind by a call deleted by hand (call_tags has no foreign key) must not
         -- fail it. When betting, they do fail it, and it is written again with upserts.
         links AS (
             INSERT INTO call_tags (call_sid, tag_id)
             SELECT l.call_sid, l.tag_id
               FROM unnest($45::text[], $46::bigint[]) AS l(call_sid, tag_id)
               JOIN calls_new USING (call_sid)
              ORDER BY 1, 2
             ON CONFLICT DO NOTHING
             RETURNING 1),
         -- Calls not inserted above (stored already, or of a body stored already when
         -- betting) and stored exactly so, tags included (as of this statement's
         -- snapshot): duplicates, settled here without a transaction of their own.
         -- Materialized, so that the tags are compared only for calls that matched (as
         -- one query, the planner compared them first, for every call of the batch).
         calls_match AS MATERIALIZED (
             SELECT i.call_sid
               FROM calls t JOIN calls_in i USING (call_sid)
              -- Index lookups, of the calls that were not just inserted (none, usually).
              WHERE t.call_sid = ANY (ARRAY(SELECT call_sid FROM calls_in
                                            EXCEPT SELECT call_sid FROM calls_new))
                AND (t.call_type, t.from_number, t.to_number, t.dial_code, t.country_name, t.status, t.status_reason, t.duration_seconds, t.ring_seconds, t.billed_minutes, t.call_charge, t.logged_at, t.started_at, t.ended_at, t.agent_email, t.agent_name, t.admin_email, t.note, t.recording_url, t.answered_device, t.hangup_by, t.call_queue, t.reason, t.dispositions, t.agent_id, t.campaign_id, t.crm_unique_id, t.virtual_number, t.parse_warnings) IS NOT DISTINCT FROM (i.call_type, i.from_number, i.to_number, i.dial_code, i.country_name, i.status, i.status_reason, i.duration_seconds, i.ring_seconds, i.billed_minutes, i.call_charge, i.logged_at, i.started_at, i.ended_at, i.agent_email, i.agent_name, i.admin_email, i.note, i.recording_url, i.answered_device, i.hangup_by, i.call_queue, i.reason, i.dispositions, i.agent_id, i.campaign_id, i.crm_unique_id, i.virtual_number, i.parse_warnings)),
         calls_same AS (
             SELECT m.call_sid FROM calls_match m
              WHERE ARRAY(SELECT ct.tag_id FROM call_tags ct
                           WHERE ct.call_sid = m.call_sid ORDER BY 1)
                  = ARRAY(SELECT l.tag_id FROM unnest($45::text[], $46::bigint[]) AS l(call_sid, tag_id)
                           WHERE l.call_sid = m.call_sid ORDER BY 1)),
         sms_in AS (SELECT x.sms_key, x.sms_type, x.from_number, x.to_number, x.status, x.content, x.logged_at, x.sms_charge::numeric AS sms_charge, x.agent_email, x.agent_name, x.admin_email, x.parse_warnings::jsonb AS parse_warnings, x.first_at, x.last_at
  FROM (SELECT unnest($47::text[]) AS sms_key,
                unnest($48::text[]) AS sms_type,
                unnest($49::text[]) AS from_number,
                unnest($50::text[]) AS to_number,
                unnest($51::text[]) AS status,
                unnest($52::text[]) AS content,
                unnest($53::timestamptz[]) AS logged_at,
                unnest($54::text[]) AS sms_charge,
                unnest($55::text[]) AS agent_email,
                unnest($56::text[]) AS agent_name,
                unnest($57::text[]) AS admin_email,
                unnest($58::text[]) AS parse_warnings,
                unnest($59::timestamptz[]) AS first_at,
                unnest($60::timestamptz[]) AS last_at) AS x),
         sms_up AS (INSERT INTO sms AS t (sms_key, sms_type, from_number, to_number, status, content, logged_at, sms_charge, agent_email, agent_name, admin_email, parse_warnings, received_at, updated_at)
         SELECT sms_key, sms_type, from_number, to_number, status, content, logged_at, sms_charge, agent_email, agent_name, admin_email, parse_warnings, first_at, first_at FROM sms_in
         ON CONFLICT (sms_key) DO UPDATE
            SET (sms_type, from_number, to_number, status, content, logged_at, sms_charge, agent_email, agent_name, admin_email, parse_warnings, updated_at, received_at) =
                (excluded.sms_type, excluded.from_number, excluded.to_number, excluded.status, excluded.content, excluded.logged_at, excluded.sms_charge, excluded.agent_email, excluded.agent_name, excluded.admin_email, excluded.parse_warnings, excluded.updated_at, least(t.received_at, excluded.received_at))
          WHERE (t.sms_type, t.from_number, t.to_number, t.status, t.content, t.logged_at, t.sms_charge, t.agent_email, t.agent_name, t.admin_email, t.parse_warnings) IS DISTINCT FROM (excluded.sms_type, excluded.from_number, excluded.to_number, excluded.status, excluded.content, excluded.logged_at, excluded.sms_charge, excluded.agent_email, excluded.agent_name, excluded.admin_email, excluded.parse_warnings)
            -- A delivery older than the one that last changed the row (one written late,
            -- from the spool) leaves it alone: the row holds the newest delivery.
            AND t.updated_at <= excluded.updated_at
         RETURNING t.sms_key, (t.xmax = 0) AS inserted),
         status_in AS (SELECT x.call_sid, x.status, x.occurred_at, x.call_type, x.from_number, x.to_number, x.agent_email, x.agent_id, x.dial_code, x.parse_warnings::jsonb AS parse_warnings, x.first_at, x.last_at
  FROM (SELECT unnest($61::text[]) AS call_sid,
                unnest($62::text[]) AS status,
                unnest($63::timestamptz[]) AS occurred_at,
                unnest($64::text[]) AS call_type,
                unnest($65::text[]) AS from_number,
                unnest($66::text[]) AS to_number,
                unnest($67::text[]) AS agent_email,
                unnest($68::text[]) AS agent_id,
                unnest($69::text[]) AS dial_code,
                unnest($70::text[]) AS parse_warnings,
                unnest($71::timestamptz[]) AS first_at,
                unnest($72::timestamptz[]) AS last_at) AS x),
         status_up AS (INSERT INTO call_status AS t (call_sid, status, occurred_at, call_type, from_number, to_number, agent_email, agent_id, dial_code, parse_warnings, received_at, updated_at)
         SELECT call_sid, status, occurred_at, call_type, from_number, to_number, agent_email, agent_id, dial_code, parse_warnings, first_at, first_at FROM status_in
         ON CONFLICT (call_sid, status, occurred_at) DO UPDATE
            SET (call_type, from_number, to_number, agent_email, agent_id, dial_code, parse_warnings, updated_at, received_at) =
                (excluded.call_type, excluded.from_number, excluded.to_number, excluded.agent_email, excluded.agent_id, excluded.dial_code, excluded.parse_warnings, excluded.updated_at, least(t.received_at, excluded.received_at))
          WHERE (t.call_type, t.from_number, t.to_number, t.agent_email, t.agent_id, t.dial_code, t.parse_warnings) IS DISTINCT FROM (excluded.call_type, excluded.from_number, excluded.to_number, excluded.agent_email, excluded.agent_id, excluded.dial_code, excluded.parse_warnings)
            -- A delivery older than the one that last changed the row (one written late,
            -- from the spool) leaves it alone: the row holds the newest delivery.
            AND t.updated_at <= excluded.updated_at
         RETURNING t.call_sid, t.status, t.occurred_at, (t.xmax = 0) AS inserted)
         -- The branches run in this order, and so take their row locks table after table
         -- in the same order as every other write path: no deadlock between them.
         -- One row per written call, SMS and status; `part` names the branch it comes from.
         SELECT 'raw' AS part, NULL::text AS key, NULL::text AS status,
                NULL::timestamptz AS occurred_at, count(*) > 0 AS inserted FROM raw
         UNION ALL SELECT 'call_inserted', call_sid, NULL, NULL, true FROM calls_new
         UNION ALL SELECT 'links', NULL, NULL, NULL, count(*) > 0 FROM links
         UNION ALL SELECT 'call_unchanged', call_sid, NULL, NULL, false FROM calls_same
         UNION ALL SELECT 'sms', sms_key, NULL, NULL, inserted FROM sms_up
         UNION ALL SELECT 'status', call_sid, status, occurred_at, inserted FROM status_up
         -- Fails the statement, writing nothing, when erasures changed since the writer
         -- checked the batch against them (migration V5).
         UNION ALL SELECT 'guard', NULL, NULL, NULL, callhippo_erasures_unchanged($73::bigint)
