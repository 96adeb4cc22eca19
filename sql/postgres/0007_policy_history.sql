-- 0007_policy_history: every stored policy is a version operators can list, compare and
-- roll back to. Who saved it (an API key's prefix, "cli", or '' when not known), its size
-- in bytes, and the version a rollback copied. Only the newest versions are kept (the count
-- is STORE_POLICY_VERSIONS in core/store/store.h).
ALTER TABLE policies ADD COLUMN saved_by TEXT NOT NULL DEFAULT '';
ALTER TABLE policies ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE policies ADD COLUMN restored_from BIGINT NOT NULL DEFAULT 0;
UPDATE policies SET size = octet_length(data);
