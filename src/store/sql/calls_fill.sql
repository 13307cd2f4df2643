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
            SET (call_type, from_number, to_number, dial_code, country_name, status, status_reason, duration_seconds, ring_seconds, billed_minutes, call_charge, logged_at, started_at, ended_at, agent_email, agent_name, admin_email, note, recording_url, answered_device, hangup_by, call_queue, reason, dispositions, agent_id, campaign_id, crm_unique_id, virtual_number, answered_at, api_id) = (COALESCE(t.call_type, excluded.call_type), COALESCE(t.from_number, excluded.from_number), COALESCE(t.to_number, excluded.to_number), COALESCE(t.dial_code, excluded.dial_code), COALESCE(t.country_name, excluded.country_name), COALESCE(t.status, excluded.status), COALESCE(t.status_reason, excluded.status_reason), COALESCE(t.duration_seconds, excluded.duration_seconds), COALESCE(t.ring_seconds, excluded.ring_seconds), COALESCE(t.billed_minutes, excluded.billed_minutes), COALESCE(t.call_charge, excluded.call_charge), COALESCE(t.logged_at, excluded.logged_at), COALESCE(t.started_at, excluded.started_at), COALESCE(t.ended_at, excluded.ended_at), COALESCE(t.agent_email, excluded.agent_email), COALESCE(t.agent_name, excluded.agent_name), COALESCE(t.admin_email, excluded.admin_email), COALESCE(t.note, excluded.note), COALESCE(t.recording_url, excluded.recording_url), COALESCE(t.answered_device, excluded.answered_device), COALESCE(t.hangup_by, excluded.hangup_by), COALESCE(t.call_queue, excluded.call_queue), COALESCE(t.reason, excluded.reason), COALESCE(t.dispositions, excluded.dispositions), COALESCE(t.agent_id, excluded.agent_id), COALESCE(t.campaign_id, excluded.campaign_id), COALESCE(t.crm_unique_id, excluded.crm_unique_id), COALESCE(t.virtual_number, excluded.virtual_number), COALESCE(t.answered_at, excluded.answered_at), COALESCE(t.api_id, excluded.api_id))
          WHERE (t.call_type IS NULL AND excluded.call_type IS NOT NULL)
             OR (t.from_number IS NULL AND excluded.from_number IS NOT NULL)
             OR (t.to_number IS NULL AND excluded.to_number IS NOT NULL)
             OR (t.dial_code IS NULL AND excluded.dial_code IS NOT NULL)
             OR (t.country_name IS NULL AND excluded.country_name IS NOT NULL)
             OR (t.status IS NULL AND excluded.status IS NOT NULL)
             OR (t.status_reason IS NULL AND excluded.status_reason IS NOT NULL)
             OR (t.duration_seconds IS NULL AND excluded.duration_seconds IS NOT NULL)
             OR (t.ring_seconds IS NULL AND excluded.ring_seconds IS NOT NULL)
             OR (t.billed_minutes IS NULL AND excluded.billed_minutes IS NOT NULL)
             OR (t.call_charge IS NULL AND excluded.call_charge IS NOT NULL)
             OR (t.logged_at IS NULL AND excluded.logged_at IS NOT NULL)
             OR (t.started_at IS NULL AND excluded.started_at IS NOT NULL)
             OR (t.ended_at IS NULL AND excluded.ended_at IS NOT NULL)
             OR (t.agent_email IS NULL AND excluded.agent_email IS NOT NULL)
             OR (t.agent_name IS NULL AND excluded.agent_name IS NOT NULL)
             OR (t.admin_email IS NULL AND excluded.admin_email IS NOT NULL)
             OR (t.note IS NULL AND excluded.note IS NOT NULL)
             OR (t.recording_url IS NULL AND excluded.recording_url IS NOT NULL)
             OR (t.answered_device IS NULL AND excluded.answered_device IS NOT NULL)
             OR (t.hangup_by IS NULL AND excluded.hangup_by IS NOT NULL)
             OR (t.call_queue IS NULL AND excluded.call_queue IS NOT NULL)
             OR (t.reason IS NULL AND excluded.reason IS NOT NULL)
             OR (t.dispositions IS NULL AND excluded.dispositions IS NOT NULL)
             OR (t.agent_id IS NULL AND excluded.agent_id IS NOT NULL)
             OR (t.campaign_id IS NULL AND excluded.campaign_id IS NOT NULL)
             OR (t.crm_unique_id IS NULL AND excluded.crm_unique_id IS NOT NULL)
             OR (t.virtual_number IS NULL AND excluded.virtual_number IS NOT NULL)
             OR (t.answered_at IS NULL AND excluded.answered_at IS NOT NULL)
             OR (t.api_id IS NULL AND excluded.api_id IS NOT NULL)
         RETURNING t.call_sid, (t.xmax = 0) AS inserted
