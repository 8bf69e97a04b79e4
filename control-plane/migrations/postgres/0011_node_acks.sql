-- What each Envoy node acknowledged, shared between control planes (see the SQLite 0011).
CREATE TABLE node_acks (
    node       TEXT COLLATE "C" PRIMARY KEY,
    clusters   TEXT COLLATE "C" NOT NULL,
    secrets    TEXT COLLATE "C" NOT NULL,
    holder     TEXT COLLATE "C" NOT NULL,
    live       BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
