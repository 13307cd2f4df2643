WITH input AS (SELECT x.sms_key, x.sms_type, x.from_number, x.to_number, x.status, x.content, x.logged_at, x.sms_charge::numeric AS sms_charge, x.agent_email, x.agent_name, x.admin_email, x.parse_warnings::jsonb AS parse_warnings, x.first_at, x.last_at
  FROM (SELECT unnest($1::text[]) AS sms_key,
                unnest($2::text[]) AS sms_type,
                unnest($3::text[]) AS from_number,
                unnest($4::text[]) AS to_number,
                unnest($5::text[]) AS status,
                unnest($6::text[]) AS content,
                unnest($7::timestamptz[]) AS logged_at,
                unnest($8::text[]) AS sms_charge,
                unnest($9::text[]) AS agent_email,
                unnest($10::text[]) AS agent_name,
                unnest($11::text[]) AS admin_email,
                unnest($12::text[]) AS parse_warnings,
                unnest($13::timestamptz[]) AS first_at,
                unnest($14::timestamptz[]) AS last_at) AS x) INSERT INTO sms AS t (sms_key, sms_type, from_number, to_number, status, content, logged_at, sms_charge, agent_email, agent_name, admin_email, parse_warnings, received_at, updated_at)
         SELECT sms_key, sms_type, from_number, to_number, status, content, logged_at, sms_charge, agent_email, agent_name, admin_email, parse_warnings, first_at, first_at FROM input
         ON CONFLICT (sms_key) DO UPDATE
            SET (sms_type, from_number, to_number, status, content, logged_at, sms_charge, agent_email, agent_name, admin_email, parse_warnings, updated_at, received_at) =
                (excluded.sms_type, excluded.from_number, excluded.to_number, excluded.status, excluded.content, excluded.logged_at, excluded.sms_charge, excluded.agent_email, excluded.agent_name, excluded.admin_email, excluded.parse_warnings, (SELECT i.last_at FROM input i WHERE i.sms_key = excluded.sms_key LIMIT 1), least(t.received_at, excluded.received_at))
          WHERE (t.sms_type, t.from_number, t.to_number, t.status, t.content, t.logged_at, t.sms_charge, t.agent_email, t.agent_name, t.admin_email, t.parse_warnings) IS DISTINCT FROM (excluded.sms_type, excluded.from_number, excluded.to_number, excluded.status, excluded.content, excluded.logged_at, excluded.sms_charge, excluded.agent_email, excluded.agent_name, excluded.admin_email, excluded.parse_warnings)
            -- A delivery older than the one that last changed the row (one written late,
            -- from the spool) leaves it alone: the row holds the newest delivery.
            AND t.updated_at <= (SELECT i.last_at FROM input i WHERE i.sms_key = excluded.sms_key LIMIT 1)
         RETURNING t.sms_key, (t.xmax = 0) AS inserted
