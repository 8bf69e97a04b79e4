-- A counter that every change to what the gateway is built from bumps, through triggers, so a
-- change made by any process counts (a user added on the command line, a second control
-- plane): the periodic rebuild skips reading and rebuilding everything when it has not moved.
CREATE TABLE generation (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO generation (id, value) VALUES (1, 0);

CREATE TRIGGER certificates_insert_generation AFTER INSERT ON certificates BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER certificates_update_generation AFTER UPDATE ON certificates BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER certificates_delete_generation AFTER DELETE ON certificates BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER mappings_insert_generation AFTER INSERT ON mappings BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER mappings_update_generation AFTER UPDATE ON mappings BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER mappings_delete_generation AFTER DELETE ON mappings BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER users_insert_generation AFTER INSERT ON users BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER users_update_generation AFTER UPDATE ON users BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER users_delete_generation AFTER DELETE ON users BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER appkeys_insert_generation AFTER INSERT ON appkeys BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER appkeys_update_generation AFTER UPDATE ON appkeys BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER appkeys_delete_generation AFTER DELETE ON appkeys BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER egress_hosts_insert_generation AFTER INSERT ON egress_hosts BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER egress_hosts_update_generation AFTER UPDATE ON egress_hosts BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER egress_hosts_delete_generation AFTER DELETE ON egress_hosts BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER credentials_insert_generation AFTER INSERT ON credentials BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER credentials_update_generation AFTER UPDATE ON credentials BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER credentials_delete_generation AFTER DELETE ON credentials BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER account_settings_insert_generation AFTER INSERT ON account_settings BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER account_settings_update_generation AFTER UPDATE ON account_settings BEGIN UPDATE generation SET value = value + 1; END;
CREATE TRIGGER account_settings_delete_generation AFTER DELETE ON account_settings BEGIN UPDATE generation SET value = value + 1; END;
