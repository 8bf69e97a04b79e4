-- Authorization-code requests waiting for their callback (see the SQLite migration 0010).
-- Idempotent, as every MySQL migration.
CREATE TABLE IF NOT EXISTS oauth_pending (
    state_sha256  CHAR(64) NOT NULL PRIMARY KEY,
    account       VARCHAR(64) NOT NULL,
    credential_id BIGINT NOT NULL,
    has_verifier  BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    KEY oauth_pending_account (account, created_at),
    KEY oauth_pending_credential (credential_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
