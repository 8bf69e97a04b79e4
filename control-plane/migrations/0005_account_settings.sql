-- Per-account settings. An account without a row has the defaults.
CREATE TABLE account_settings (
    account                      TEXT    PRIMARY KEY,
    -- A caller's LP-authorization-override replaces a credential attached to the mapping.
    allow_authorization_override INTEGER NOT NULL DEFAULT 0,
    updated_at                   INTEGER NOT NULL
);
