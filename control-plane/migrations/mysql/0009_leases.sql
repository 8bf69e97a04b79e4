-- Leases (see the SQLite migration 0009): one holder at a time per piece of work, by the
-- database's clock. Idempotent, as every MySQL migration.
CREATE TABLE IF NOT EXISTS leases (
    name       VARCHAR(191) NOT NULL PRIMARY KEY,
    holder     VARCHAR(64) NOT NULL,
    expires_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
