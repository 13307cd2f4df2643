INSERT INTO raw_events AS r (kind, body_sha256, payload, body, body_bytes, content_type, error, received_at, last_received_at, deliveries, source, event_at)
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
                event_at         = coalesce(excluded.event_at, r.event_at)
