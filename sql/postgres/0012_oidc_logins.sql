-- 0012_oidc_logins: OIDC logins between the redirect to the provider and its callback, so
-- the callback may reach another replica than the one that sent the browser away. A row is
-- found by a keyed hash of the login's state (the state itself is not kept; nor are the
-- nonce and the PKCE verifier, which the server derives from the state and its secret), goes
-- with its registration, and is deleted by the callback that uses it.
CREATE TABLE oidc_logins (
    state_hash TEXT PRIMARY KEY,
    registration_id TEXT NOT NULL REFERENCES registrations (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oidc_logins_registration ON oidc_logins (registration_id);
