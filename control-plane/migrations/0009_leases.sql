-- Leases: which control plane does a piece of work that exactly one should do at a time (a
-- credential's token request, for one). A row per piece of work; its holder may do it until
-- `expires_at` (Unix seconds, by the database's clock); anyone may take an expired one. No
-- trigger bumps the generation: nothing the gateway is built from changes here.
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
