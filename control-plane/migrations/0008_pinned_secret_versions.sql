-- Rows pin the secret-store version they point at (security review finding 10), so a
-- failed or interrupted write leaves the gateway presenting exactly what the database says.
--
-- certificates.vault_write_id: the mark (`mtlsgateWriteId`) of the API write that made the
-- pinned version; NULL for a version an operator wrote directly in Vault, or one written
-- before marks existed.
ALTER TABLE certificates ADD COLUMN vault_write_id TEXT;
-- credentials.secret_version: the KV version of the credential's secrets; 0 for a row
-- written before this migration (read as the newest version until its next update pins it).
ALTER TABLE credentials ADD COLUMN secret_version INTEGER NOT NULL DEFAULT 0;
