-- 006_relay_leases: an outbox cursor is held by one relay at a time (SQLite).
-- A relay claims its cursor with a lease (owner, lease_until in ms since the epoch) and renews it
-- as it advances; on a shared store only the holder delivers. Cursors written before (the admin
-- API's consumers) have no owner and an expired lease.
ALTER TABLE cursors ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE cursors ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
