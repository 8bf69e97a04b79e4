-- The egress allowlist: hosts each account lets the gateway reach over plain TLS when a URL
-- has no mapping. Hosts are stored canonical (lower case, explicit port); `position` keeps
-- the order the account gave them in.
CREATE TABLE egress_hosts (
    account  TEXT    NOT NULL,
    position INTEGER NOT NULL,
    host     TEXT    NOT NULL,
    port     INTEGER NOT NULL,
    PRIMARY KEY (account, host, port)
);
CREATE INDEX egress_hosts_account ON egress_hosts (account, position);
