-- Authorization-code requests waiting for their callback, so the callback may land on any
-- control plane. `state_sha256`: hex SHA-256 of the `state` sent to the user's browser (the
-- state itself is never stored, so reading this table does not let anyone answer a
-- callback). The PKCE verifier, a secret, is in the secret store. Nothing the gateway is built
-- from changes here: no generation trigger.
CREATE TABLE oauth_pending (
    state_sha256  TEXT    PRIMARY KEY,
    account       TEXT    NOT NULL,
    credential_id INTEGER NOT NULL,
    has_verifier  INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX oauth_pending_account ON oauth_pending (account, created_at);
CREATE INDEX oauth_pending_credential ON oauth_pending (credential_id);
