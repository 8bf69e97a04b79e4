-- People who log in. Passwords are stored as argon2id PHC strings, never in clear.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account       TEXT    NOT NULL,
    username      TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    is_admin      INTEGER NOT NULL,
    privileges    TEXT    NOT NULL,  -- JSON array of privilege names
    deleted       INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_account_username ON users (account, username) WHERE deleted = 0;

-- AppKeys (OAuth1 credentials). Only public identifiers here; the consumer secret and the
-- access token secret live in Vault.
CREATE TABLE appkeys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    account      TEXT    NOT NULL,
    consumer_key TEXT    NOT NULL UNIQUE,
    access_token TEXT    NOT NULL UNIQUE,
    privileges   TEXT    NOT NULL,  -- JSON array of privilege names
    created_by   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
CREATE INDEX appkeys_account ON appkeys (account);
