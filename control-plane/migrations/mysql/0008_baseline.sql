-- MySQL 8 / MariaDB 10.11: the schema the SQLite migrations 0001-0008 build, in one step, plus
-- what several writers on one server need (account_locks). Same meaning, column by column:
--   * every table is InnoDB in utf8mb4 with the utf8mb4_nopad_bin collation: bytewise, and
--     'a' differs from 'a ' (utf8mb4_bin pads, so it would call them equal), as SQLite's BINARY;
--   * flags are 0/1 BIGINTs, as in SQLite;
--   * neither has partial indexes: "unique among live rows" is a unique index over a stored
--     generated column that is NULL for deleted rows (NULLs never collide).
-- MySQL's DDL is not transactional (each statement commits), so every statement here may run
-- again after a crash halfway: IF NOT EXISTS throughout. Runs under GET_LOCK.

CREATE TABLE IF NOT EXISTS certificates (
    id                 BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    account            VARCHAR(64) NOT NULL,
    name               VARCHAR(128) NOT NULL,
    display_name       TEXT NOT NULL,
    deleted            BIGINT NOT NULL DEFAULT 0,
    subject            TEXT NOT NULL,
    issuer             TEXT NOT NULL,
    serial_number      TEXT NOT NULL,
    not_before         BIGINT NOT NULL,
    not_after          BIGINT NOT NULL,
    sha256_fingerprint VARCHAR(128) NOT NULL,
    key_algorithm      VARCHAR(64) NOT NULL,
    key_size           BIGINT NOT NULL,
    vault_version      BIGINT NOT NULL DEFAULT 0,
    vault_write_id     VARCHAR(128),
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    live_name          VARCHAR(128) AS (IF(deleted = 0, name, NULL)) STORED,
    UNIQUE KEY certificates_account_name (account, live_name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS credentials (
    id             BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    account        VARCHAR(64) NOT NULL,
    name           VARCHAR(128) NOT NULL,
    kind           VARCHAR(64) NOT NULL,
    settings       MEDIUMTEXT NOT NULL,
    deleted        BIGINT NOT NULL DEFAULT 0,
    secret_version BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    live_name      VARCHAR(128) AS (IF(deleted = 0, name, NULL)) STORED,
    one_pre_auth   VARCHAR(64)
        AS (IF(deleted = 0 AND kind = 'consumerPreAuthentication', account, NULL)) STORED,
    UNIQUE KEY credentials_account_name (account, live_name),
    UNIQUE KEY credentials_one_pre_authentication (one_pre_auth)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- A URL may be 8 KiB, past InnoDB's 3072-byte key limit: the unique index covers its SHA-256.
-- ca_certificates may be 64 KiB: one byte more than TEXT holds.
CREATE TABLE IF NOT EXISTS mappings (
    id              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    account         VARCHAR(64) NOT NULL,
    name            VARCHAR(128) NOT NULL,
    service_id      BIGINT NOT NULL,
    url             TEXT NOT NULL,
    certificate_id  BIGINT NOT NULL,
    enabled         BIGINT NOT NULL,
    deleted         BIGINT NOT NULL DEFAULT 0,
    ca_certificates MEDIUMTEXT,
    credential_id   BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    live_name       VARCHAR(128) AS (IF(deleted = 0, name, NULL)) STORED,
    live_url_sha    BINARY(32) AS (IF(deleted = 0, UNHEX(SHA2(url, 256)), NULL)) STORED,
    UNIQUE KEY mappings_account_name (account, live_name),
    UNIQUE KEY mappings_triplet (account, service_id, live_url_sha),
    KEY mappings_certificate (certificate_id),
    CONSTRAINT mappings_certificate_fk FOREIGN KEY (certificate_id) REFERENCES certificates (id),
    CONSTRAINT mappings_credential_fk FOREIGN KEY (credential_id) REFERENCES credentials (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS account_revisions (
    account  VARCHAR(64) NOT NULL PRIMARY KEY,
    revision BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS users (
    id            BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    account       VARCHAR(64) NOT NULL,
    username      VARCHAR(128) NOT NULL,
    password_hash TEXT NOT NULL,
    is_admin      BIGINT NOT NULL,
    privileges    TEXT NOT NULL,
    deleted       BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    live_username VARCHAR(128) AS (IF(deleted = 0, username, NULL)) STORED,
    UNIQUE KEY users_account_username (account, live_username)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS appkeys (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    account      VARCHAR(64) NOT NULL,
    consumer_key VARCHAR(255) NOT NULL UNIQUE,
    access_token VARCHAR(255) NOT NULL UNIQUE,
    privileges   TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    KEY appkeys_account (account)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS egress_hosts (
    account  VARCHAR(64) NOT NULL,
    position BIGINT NOT NULL,
    host     VARCHAR(255) NOT NULL,
    port     BIGINT NOT NULL,
    PRIMARY KEY (account, host, port),
    KEY egress_hosts_account (account, position)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS account_settings (
    account                      VARCHAR(64) NOT NULL PRIMARY KEY,
    allow_authorization_override BIGINT NOT NULL DEFAULT 0,
    updated_at                   BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- scope: 'user:' + account (64) + ':' + user name (128), or 'ip:' + an address.
CREATE TABLE IF NOT EXISTS login_failures (
    scope        VARCHAR(256) NOT NULL PRIMARY KEY,
    failures     BIGINT NOT NULL,
    last_failure BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    KEY login_failures_last_failure (last_failure)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- One row per account that has written: every write transaction locks its account's row
-- first, so checks and the writes they allow are serialized per account across replicas.
CREATE TABLE IF NOT EXISTS account_locks (
    account VARCHAR(64) NOT NULL PRIMARY KEY
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS generation (
    id    BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
) ENGINE = InnoDB;
INSERT IGNORE INTO generation (id, value) VALUES (1, 0);

CREATE TRIGGER IF NOT EXISTS certificates_insert_generation AFTER INSERT ON certificates FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS certificates_update_generation AFTER UPDATE ON certificates FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS certificates_delete_generation AFTER DELETE ON certificates FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS mappings_insert_generation AFTER INSERT ON mappings FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS mappings_update_generation AFTER UPDATE ON mappings FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS mappings_delete_generation AFTER DELETE ON mappings FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS users_insert_generation AFTER INSERT ON users FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS users_update_generation AFTER UPDATE ON users FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS users_delete_generation AFTER DELETE ON users FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS appkeys_insert_generation AFTER INSERT ON appkeys FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS appkeys_update_generation AFTER UPDATE ON appkeys FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS appkeys_delete_generation AFTER DELETE ON appkeys FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS egress_hosts_insert_generation AFTER INSERT ON egress_hosts FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS egress_hosts_update_generation AFTER UPDATE ON egress_hosts FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS egress_hosts_delete_generation AFTER DELETE ON egress_hosts FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS credentials_insert_generation AFTER INSERT ON credentials FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS credentials_update_generation AFTER UPDATE ON credentials FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS credentials_delete_generation AFTER DELETE ON credentials FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS account_settings_insert_generation AFTER INSERT ON account_settings FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS account_settings_update_generation AFTER UPDATE ON account_settings FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
CREATE TRIGGER IF NOT EXISTS account_settings_delete_generation AFTER DELETE ON account_settings FOR EACH ROW UPDATE generation SET value = value + 1 WHERE id = 1;
