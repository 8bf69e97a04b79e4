-- Failed logins per scope, so a password cannot be guessed at the speed of the hardware:
-- 'user:<account>:<user name>' and 'ip:<client address>'. Kept in the database, not in a
-- process, so the limits hold whichever control plane a login reaches. No trigger bumps the
-- generation: nothing the gateway is built from changes here.
CREATE TABLE login_failures (
    scope        TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    last_failure INTEGER NOT NULL,
    locked_until INTEGER NOT NULL
);
CREATE INDEX login_failures_last_failure ON login_failures (last_failure);
