-- Leases (see the SQLite migration 0009): one holder at a time per piece of work, by the
-- database's clock.
CREATE TABLE leases (
    name       TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL
);
