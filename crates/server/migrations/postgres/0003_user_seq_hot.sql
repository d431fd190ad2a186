-- user_seq rows are updated on every message of their user: leave room on each page so the
-- updates stay HOT (no index entry per update), and vacuum the table eagerly so dead row
-- versions do not pile up and slow every later upsert down.
ALTER TABLE user_seq SET (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
