-- 007_module_schema: the version each module's own migrations are at (PostgreSQL). Modules (the ledger,
-- the vault, the sandbox acquirer) ship their tables' migrations in their own folders and apply
-- them with ks_sql_migrate (src/store/sql.h), which records here how far each has come. A module
-- without a row is new to this database, or comes from before modules had their own migrations:
-- then the store migrations that created its tables (002-005) are its baseline.
CREATE TABLE IF NOT EXISTS ks_module_schema (
    module      text    PRIMARY KEY,
    version     integer NOT NULL,
    updated_at  bigint  NOT NULL
);
