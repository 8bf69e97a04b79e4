-- What each Envoy node acknowledged, shared between control planes (see the SQLite 0011).
-- Idempotent, as every MySQL migration.
CREATE TABLE IF NOT EXISTS node_acks (
    node       VARCHAR(191) NOT NULL PRIMARY KEY,
    clusters   LONGTEXT NOT NULL,
    secrets    LONGTEXT NOT NULL,
    holder     VARCHAR(64) NOT NULL,
    live       BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
