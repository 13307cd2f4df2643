-- V9: tag ids are bigint. An integer id would run out after 2^31 names; tags are never
-- deleted, so a flood of distinct names (a hostile sender with the token, or years of
-- free-text tags) would one day make every call with a new tag fail.
-- call_history reads tags.id and call_tags.tag_id, so it is made again exactly as it is
-- (its definition, comments and privileges read from the catalog first). If another object
-- depends on these columns (a view of your own), or the migrating role does not own them,
-- nothing here changes and a warning says so: ids stay integer, and the service works as
-- before. Rewriting call_tags holds its lock: a few seconds per million rows, and writes
-- wait for it.
-- Never edit this file once applied: add a new V<n>__*.sql instead.
DO $v9$
DECLARE
    definition text := pg_get_viewdef('call_history'::regclass, true);
    comments text[] := ARRAY(
        SELECT CASE WHEN d.objsubid = 0
                    THEN format('COMMENT ON VIEW call_history IS %L', d.description)
                    ELSE format('COMMENT ON COLUMN call_history.%I IS %L', a.attname, d.description)
               END
          FROM pg_description d
          LEFT JOIN pg_attribute a ON a.attrelid = d.objoid AND a.attnum = d.objsubid
         WHERE d.objoid = 'call_history'::regclass AND d.classoid = 'pg_class'::regclass);
    grants text[] := ARRAY(
        SELECT format('GRANT %s ON call_history TO %s%s', a.privilege_type,
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                           ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                      CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.oid = 'call_history'::regclass AND a.grantee <> c.relowner);
    s text;
BEGIN
    DROP VIEW call_history;
    ALTER TABLE tags ALTER COLUMN id TYPE bigint;
    EXECUTE format('ALTER SEQUENCE %s AS bigint MAXVALUE 9223372036854775807',
                   pg_get_serial_sequence('tags', 'id'));
    ALTER TABLE call_tags ALTER COLUMN tag_id TYPE bigint;
    EXECUTE 'CREATE VIEW call_history AS ' || definition;
    FOREACH s IN ARRAY comments || grants LOOP
        EXECUTE s;
    END LOOP;
    ANALYZE tags, call_tags;
EXCEPTION
    WHEN dependent_objects_still_exist OR feature_not_supported OR insufficient_privilege THEN
    RAISE WARNING 'tag ids stay integer: %. To apply it later, remove the cause and run migrations/V9__bigint_tag_ids.sql with psql.', SQLERRM;
END
$v9$;
