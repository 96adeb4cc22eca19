-- 0003_registration_rejected: an operator may refuse a pending interactive login
-- (`headscale auth reject`); the client waiting on it is told so, and the registration can no
-- longer be completed.
ALTER TABLE registrations ADD COLUMN rejected BOOLEAN NOT NULL DEFAULT FALSE;
