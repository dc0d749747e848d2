-- Distributes the pixeltrack schema over a Citus cluster: applied by
-- `pixeltrack distribute` after schema.sql, on the coordinator. Idempotent:
-- a table already distributed (or a reference table) is left as it is, so it
-- is safe to run again, for instance after an upgrade added a table.
--
-- Small global tables (jobs and their settings, one-row keys, the daily
-- salts) become reference tables, copied to every node; every other table
-- holds rows of one job each and is distributed by job_id, all co-located
-- with raw_hits, so everything the roll-up joins for a job lives in one shard
-- group on one worker.
DO $$
DECLARE
    t text;
    -- jobs first (the others reference it); operator and trigger tables are small and global
    reference text[] := ARRAY['jobs', 'sites', 'erasure_key', 'site_salts',
        'dashboard_users', 'dashboard_sessions', 'dashboard_api_tokens',
        'triggers', 'trigger_events', 'trigger_attempts'];
    -- raw_hits first: it names the co-location group the others join.
    by_job text[] := ARRAY[
        'raw_hits', 'recipients', 'links', 'job_keys', 'unique_seen', 'forgotten_recipients',
        'report_job_totals', 'report_hourly', 'report_links', 'report_recipients', 'report_recipient_links',
        'report_demographics', 'report_breakdowns', 'report_rejected', 'job_machine',
        'doc_pages', 'doc_page_seconds', 'doc_reader_pages', 'doc_reading_state', 'mail_openers', 'recent_clicks',
        'site_hourly', 'site_daily', 'site_seen', 'site_sessions', 'site_pages', 'site_sources',
        'site_breakdowns', 'site_contacts', 'site_contact_views', 'site_totals'];
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RAISE EXCEPTION 'the citus extension is not installed in this database'
            USING HINT = 'CREATE EXTENSION citus, and register the workers (citus_add_node), first';
    END IF;
    -- asyncpg reads the catalog once per connection to learn array and
    -- composite types; Citus hides shards from that read with a filter that
    -- costs 1-3 s on the coordinator (relation_is_a_known_shard per pg_class
    -- row and type). The coordinator holds no shards: nothing to hide.
    EXECUTE format('ALTER DATABASE %I SET citus.override_table_visibility TO off', current_database());
    -- Several tables reference jobs: Citus wants one connection per worker
    -- for the rest of a transaction that wrote a reference table.
    SET LOCAL citus.multi_shard_modify_mode TO 'sequential';
    FOREACH t IN ARRAY reference LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                       WHERE logicalrelid = t::regclass AND partmethod = 'n' AND repmodel = 't') THEN
            PERFORM create_reference_table(t);
        END IF;
    END LOOP;
    FOREACH t IN ARRAY by_job LOOP
        -- (a table with a foreign key to jobs is a "Citus local" table by
        -- now, made so by create_reference_table: distributed from there)
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = t::regclass AND partmethod = 'h') THEN
            PERFORM create_distributed_table(t, 'job_id',
                                             colocate_with => CASE WHEN t = 'raw_hits' THEN 'default' ELSE 'raw_hits' END);
        END IF;
    END LOOP;
END $$;
