-- Authorization-code requests waiting for their callback (see the SQLite migration 0010).
CREATE TABLE oauth_pending (
    state_sha256  TEXT COLLATE "C" PRIMARY KEY,
    account       TEXT COLLATE "C" NOT NULL,
    credential_id BIGINT NOT NULL,
    has_verifier  BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX oauth_pending_account ON oauth_pending (account, created_at);
CREATE INDEX oauth_pending_credential ON oauth_pending (credential_id);
