WITH input AS (SELECT x.call_sid, x.status, x.occurred_at, x.call_type, x.from_number, x.to_number, x.agent_email, x.agent_id, x.dial_code, x.parse_warnings::jsonb AS parse_warnings, x.first_at, x.last_at
  FROM (SELECT unnest($1::text[]) AS call_sid,
                unnest($2::text[]) AS status,
                unnest($3::timestamptz[]) AS occurred_at,
                unnest($4::text[]) AS call_type,
                unnest($5::text[]) AS from_number,
                unnest($6::text[]) AS to_number,
                unnest($7::text[]) AS agent_email,
                unnest($8::text[]) AS agent_id,
                unnest($9::text[]) AS dial_code,
                unnest($10::text[]) AS parse_warnings,
                unnest($11::timestamptz[]) AS first_at,
                unnest($12::timestamptz[]) AS last_at) AS x) INSERT INTO call_status AS t (call_sid, status, occurred_at, call_type, from_number, to_number, agent_email, agent_id, dial_code, parse_warnings, received_at, updated_at)
         SELECT call_sid, status, occurred_at, call_type, from_number, to_number, agent_email, agent_id, dial_code, parse_warnings, first_at, first_at FROM input
         ON CONFLICT (call_sid, status, occurred_at) DO UPDATE
            SET (call_type, from_number, to_number, agent_email, agent_id, dial_code, parse_warnings, updated_at, received_at) =
                (excluded.call_type, excluded.from_number, excluded.to_number, excluded.agent_email, excluded.agent_id, excluded.dial_code, excluded.parse_warnings, (SELECT i.last_at FROM input i WHERE i.call_sid = excluded.call_sid AND i.status = excluded.status AND i.occurred_at = excluded.occurred_at LIMIT 1), least(t.received_at, excluded.received_at))
          WHERE (t.call_type, t.from_number, t.to_number, t.agent_email, t.agent_id, t.dial_code, t.parse_warnings) IS DISTINCT FROM (excluded.call_type, excluded.from_number, excluded.to_number, excluded.agent_email, excluded.agent_id, excluded.dial_code, excluded.parse_warnings)
            -- A delivery older than the one that last changed the row (one written late,
            -- from the spool) leaves it alone: the row holds the newest delivery.
            AND t.updated_at <= (SELECT i.last_at FROM input i WHERE i.call_sid = excluded.call_sid AND i.status = excluded.status AND i.occurred_at = excluded.occurred_at LIMIT 1)
         RETURNING t.call_sid, t.status, t.occurred_at, (t.xmax = 0) AS inserted
