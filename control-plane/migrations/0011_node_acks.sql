-- What each Envoy node acknowledged over ADS, shared between control planes: a gateway's ADS
-- stream and its snapshot poll may reach two replicas, and the snapshot shows a mapping only
-- once the node acknowledged its cluster and secret. `clusters`, `secrets`: JSON arrays of
-- resource names; `holder`: the control plane whose stream wrote it; `live`: 1 while that
-- stream is open. No generation trigger: gateways are not built from it.
CREATE TABLE node_acks (
    node       TEXT    PRIMARY KEY,
    clusters   TEXT    NOT NULL,
    secrets    TEXT    NOT NULL,
    holder     TEXT    NOT NULL,
    live       INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
