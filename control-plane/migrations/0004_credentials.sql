-- Credentials an account attaches to mappings. Only non-secret settings here; secrets live in
-- Vault.
CREATE TABLE credentials (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account    TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    settings   TEXT    NOT NULL,  -- JSON object of the non-secret fields
    deleted    INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX credentials_account_name ON credentials (account, name) WHERE deleted = 0;
CREATE UNIQUE INDEX credentials_one_pre_authentication ON credentials (account)
    WHERE deleted = 0 AND kind = 'consumerPreAuthentication';

ALTER TABLE mappings ADD COLUMN credential_id INTEGER REFERENCES credentials (id);
