-- 0008_user_groups: the groups an OIDC user's identity provider put them in at their last
-- login (the `groups` claim), a JSON array of names; the policy's group:<name> entries it
-- does not define itself are filled from them. Local users have none.
ALTER TABLE users ADD COLUMN provider_groups TEXT NOT NULL DEFAULT '[]';
