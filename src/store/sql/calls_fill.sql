WITH input AS (SELECT x.call_sid, x.call_type, x.from_number, x.to_number, x.dial_code, x.country_name, x.status, x.status_reason, x.duration_seconds, x.ring_seconds, x.billed_minutes, x.call_charge::numeric AS call_charge, x.logged_at, x.started_at, x.ended_at, x.agent_email, x.agent_name, x.admin_email, x.note, x.recording_url, x.answered_device, x.hangup_by, x.call_queue, x.reason, x.dispositions::text[] AS dispositions, x.agent_id, x.campaign_id, x.crm_unique_id, x.virtual_number, x.parse_warnings::jsonb AS parse_warnings, x.first_at, x.last_at, x.answered_at, x.api_id
  FROM (SELECT unnest($1::text[]) AS call_sid,
                unnest($2::text[]) AS call_type,
                unnest($3::text[]) AS from_number,
                unnest($4::text[]) AS to_number,
                unnest($5::text[]) AS dial_code,
                unnest($6::text[]) AS country_name,
                unnest($7::text[]) AS status,
                unnest($8::text[]) AS status_reason,
                unnest($9::integer[]) AS duration_seconds,
                unnest($10::integer[]) AS ring_seconds,
                unnest($11::integer[]) AS billed_minutes,
                unnest($12::text[]) AS call_charge,
                unnest($13::timestamptz[]) AS logged_at,
                unnest($14::timestamptz[]) AS started_at,
                unnest($15::timestamptz[]) AS ended_at,
                unnest($16::text[]) AS agent_email,
                unnest($17::text[]) AS agent_name,
                unnest($18::text[]) AS admin_email,
                unnest($19::text[]) AS note,
                unnest($20::text[]) AS recording_url,
                unnest($21::text[]) AS answered_device,
                unnest($22::text[]) AS hangup_by,
                unnest($23::boolean[]) AS call_queue,
                unnest($24::text[]) AS reason,
                unnest($25::text[]) AS dispositions,
                unnest($26::text[]) AS agent_id,
                unnest($27::text[]) AS campaign_id,
                unnest($28::text[]) AS crm_unique_id,
                unnest($29::text[]) AS virtual_number,
                unnest($30::text[]) AS parse_warnings,
                unnest($31::timestamptz[]) AS first_at,
                unnest($32::timestamptz[]) AS last_at,
                unnest($33::timestamptz[]) AS answered_at,
                unnest($34::text[]) AS api_id) AS x)
         INSERT INTO calls AS t (call_sid, call_type, from_number, to_number, dial_code, country_name, status, status_reason, duration_seconds, ring_seconds, billed_minutes, call_charge, logged_at, started_at, ended_at, agent_email, agent_name, admin_email, note, recording_url, answered_device, hangup_by, call_queue, reason, dispositions, agent_id, campaign_id, crm_unique_id, virtual_number, parse_warnings, answered_at, api_id, source, received_at, updated_at)
         SELECT call_sid, call_type, from_number, to_number, dial_code, country_name, status, status_reason, duration_seconds, ring_seconds, billed_minutes, call_charge, logged_at, started_at, ended_at, agent_email, agent_name, admin_email, note, recording_url, answered_device, hangup_by, call_queue, reason, dispositions, agent_id, campaign_id, crm_unique_id, virtual_number, parse_warnings, answered_at, api_id, 'api', first_at, COALESCE(ended_at, started_at, first_at)
           FROM input
         ON CONFLICT (call_sid) DO UPDATE
            SET (answered_at, api_id) = (COALESCE(t.answered_at, excluded.answered_at), COALESCE(t.api_id, excluded.api_id))
          WHERE (t.answered_at IS NULL AND excluded.answered_at IS NOT NULL)
             OR (t.api_id IS NULL AND excluded.api_id IS NOT NULL)
         RETURNING t.call_sid, (t.xmax = 0) AS inserted
