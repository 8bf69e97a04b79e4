-- Metadata only: certificate material lives in Vault, never here.
CREATE TABLE certificates (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    account            TEXT    NOT NULL,
    name               TEXT    NOT NULL,
    display_name       TEXT    NOT NULL,
    deleted            INTEGER NOT NULL DEFAULT 0,
    subject            TEXT    NOT NULL,
    issuer             TEXT    NOT NULL,
    serial_number      TEXT    NOT NULL,
    not_before         INTEGER NOT NULL,
    not_after          INTEGER NOT NULL,
    sha256_fingerprint TEXT    NOT NULL,
    key_algorithm      TEXT    NOT NULL,
    key_size           INTEGER NOT NULL,
    vault_version      INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE UNIQUE INDEX certificates_account_name ON certificates (account, name) WHERE deleted = 0;

CREATE TABLE mappings (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account         TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    service_id      INTEGER NOT NULL,
    url             TEXT    NOT NULL,
    certificate_id  INTEGER NOT NULL REFERENCES certificates (id),
    enabled         INTEGER NOT NULL,
    deleted         INTEGER NOT NULL DEFAULT 0,
    ca_certificates TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX mappings_account_name ON mappings (account, name) WHERE deleted = 0;
CREATE UNIQUE INDEX mappings_triplet ON mappings (account, service_id, url) WHERE deleted = 0;
CREATE INDEX mappings_certificate ON mappings (certificate_id) WHERE deleted = 0;

-- The `ac-revision` of each account's mapping collection.
CREATE TABLE account_revisions (
    account  TEXT    PRIMARY KEY,
    revision INTEGER NOT NULL
);
