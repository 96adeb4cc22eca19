/* OIDC: who may log in (oidc.allowed_*), and the user a login belongs to (issuer + subject,
 * as headscale keys them). What the ID token must say is oidc_rp.c's. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/oidc_internal.h"

static bool in_groups(const json_t *claims, const struct hs_strv *allowed)
{
    const json_t *g;
    size_t i;

    json_array_foreach(json_object_get(claims, "groups"), i, g)
        if (json_is_string(g) && hs_strv_contains(allowed, json_string_value(g)))
            return true;
    return false;
}

static bool list_has_nocase(const struct hs_strv *v, const char *s)
{
    for (size_t i = 0; s && i < v->n; i++)
        if (strcasecmp(v->v[i], s) == 0)
            return true;
    return false;
}

/* oidc.allowed_groups, allowed_domains, allowed_users, as headscale applies them: a group
 * match is enough for the first; the e-mail lists count only a verified address (unless
 * oidc.email_verified_required is off). */
int auth_oidc_allowed(const struct hs_config *cfg, const json_t *claims, char *why,
                      size_t whysize)
{
    const char *email = hs_json_str(claims, "email");
    const char *at = email ? strrchr(email, '@') : NULL;
    bool trusted = auth_oidc_email_verified(claims) || !cfg->oidc_email_verified_required;

    if (cfg->oidc_allowed_groups.n && !in_groups(claims, &cfg->oidc_allowed_groups))
        return snprintf(why, whysize, "you are not in a group allowed to log in here"), -EACCES;
    if ((cfg->oidc_allowed_domains.n || cfg->oidc_allowed_users.n) && !trusted)
        return snprintf(why, whysize, "your e-mail address is not verified"), -EACCES;
    if (cfg->oidc_allowed_domains.n && !(at && list_has_nocase(&cfg->oidc_allowed_domains, at + 1)))
        return snprintf(why, whysize, "your e-mail domain may not log in here"), -EACCES;
    if (cfg->oidc_allowed_users.n && !list_has_nocase(&cfg->oidc_allowed_users, email))
        return snprintf(why, whysize, "your account may not log in here"), -EACCES;
    return 0;
}

/* headscale's user name rules: 2+ characters, a letter first, then letters, digits, '-', '.',
 * '_' and at most one '@'. */
static bool name_valid(const char *s)
{
    int ats = 0;

    if (!s || strlen(s) < 2 || strlen(s) > 255 || !isalpha((unsigned char)*s))
        return false;
    for (; *s; s++) {
        ats += *s == '@';
        if (!(isalnum((unsigned char)*s) || strchr("-._@", *s)) || (*s & 0x80) || ats > 1)
            return false;
    }
    return true;
}

/* The name a new user gets: 0.22.3 made it from the e-mail (its domain stripped with
 * oidc.strip_email_domain, else '@' → '.'); later versions take preferred_username. Failing
 * those, the e-mail's local part, then "oidc-" and the subject. */
static char *user_name(const struct hs_config *cfg, const json_t *claims, const char *email)
{
    const char *pref = hs_json_str(claims, "preferred_username");
    char *name;

    if (cfg->legacy && email) {
        name = hs_strdup(email);
        if (cfg->oidc_strip_email_domain)
            name[strcspn(name, "@")] = '\0';
        else if (strchr(name, '@'))
            *strchr(name, '@') = '.';
    } else if (name_valid(pref)) {
        name = hs_strdup(pref);
    } else if (email) {
        name = hs_strndup(email, strcspn(email, "@"));
    } else {
        name = hs_aprintf("oidc-%s", hs_json_str(claims, "sub"));
    }
    for (char *p = name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return name;
}

/* The provider's groups of the claims: the strings of `groups`, at most OIDC_MAX_GROUPS of
 * them, each of 1 to 255 bytes (longer names could never match a policy entry). */
static void claim_groups(const json_t *claims, struct hs_strv *out)
{
    const json_t *g;
    size_t i;

    json_array_foreach(json_object_get(claims, "groups"), i, g) {
        const char *name = json_string_value(g);
        if (out->n == OIDC_MAX_GROUPS)
            break;
        if (name && *name && strlen(name) <= 255 && !hs_strv_contains(out, name))
            hs_strv_push(out, name);
    }
}

/* What the claims say of the user: display name, picture, groups, and the e-mail address
 * unless nobody proved it (then it is not recorded). The strings are borrowed from claims. */
static void profile_of(const struct hs_config *cfg, const json_t *claims, struct store_user *p)
{
    p->email = (char *)hs_json_str(claims, "email");
    if (!auth_oidc_email_verified(claims) && cfg->oidc_email_verified_required)
        p->email = NULL;
    p->display_name = (char *)hs_json_str(claims, "name");
    p->profile_pic_url = (char *)hs_json_str(claims, "picture");
    claim_groups(claims, &p->groups);
}

static bool profile_same(const struct store_user *a, const struct store_user *b)
{
    return hs_streq(a->display_name, b->display_name) && hs_streq(a->email, b->email) &&
           hs_streq(a->profile_pic_url, b->profile_pic_url) && hs_strv_equal(&a->groups, &b->groups);
}

/* The user whose provider identifier is id with the profile of this login, created if there
 * is none. The profile is written only when it changed: a change of groups recompiles the
 * policy on every replica. */
static int find_or_create_user(struct auth *a, const json_t *claims, const char *id,
                               struct store_user *out)
{
    struct store_user in = { 0 }, old;
    int rc;

    profile_of(a->cfg, claims, &in);
    if ((rc = store_user_get_by_provider_id(a->st, id, &old)) == 0) {
        if (profile_same(&old, &in)) {
            *out = old;
        } else {
            rc = store_user_update_profile(a->st, old.id, &in, out);
            if (rc == 0)
                log_info("oidc: user %llu (%s): profile updated from the provider",
                         (unsigned long long)old.id, old.name);
            store_user_free(&old);
        }
    } else if (rc == -ENOENT) {
        in.name = user_name(a->cfg, claims, in.email);
        in.provider = "oidc";
        in.provider_id = (char *)id;
        rc = store_user_create(a->st, &in, out);
        if (rc == 0)
            log_info("oidc: user %llu (%s) created for %s", (unsigned long long)out->id,
                     in.name, id);
        free(in.name);
    }
    hs_strv_free(&in.groups);
    return rc;
}

/* Node key expiry: the token's with oidc.use_expiry_from_token, else 0.22.3's oidc.expiry,
 * else node.expiry (0: the usual default). */
static int64_t login_expiry(const struct hs_config *cfg, const json_t *claims)
{
    json_t *exp = json_object_get(claims, "exp");

    if (cfg->oidc_use_expiry_from_token && json_is_number(exp))
        return (int64_t)json_number_value(exp) * HS_USEC_PER_SEC;
    if (cfg->oidc_expiry_us)
        return hs_now_us() + cfg->oidc_expiry_us;
    return 0;
}

int auth__oidc_login(struct auth_oidc *o, const json_t *claims, const char *reg_id,
                     struct auth_oidc_login *out, char *why, size_t whysize)
{
    char *id;
    int rc;

    *out = (struct auth_oidc_login){ 0 };
    if ((rc = auth_oidc_allowed(o->cfg, claims, why, whysize)) < 0) {
        log_info("oidc: login of %.100s refused: %s", hs_json_str(claims, "sub"), why);
        return rc;
    }
    id = auth_oidc_identifier(hs_json_str(claims, "iss"), hs_json_str(claims, "sub"));
    rc = find_or_create_user(o->auth, claims, id, &out->user);
    free(id);
    if (rc < 0) {
        snprintf(why, whysize, "the user cannot be recorded: %s", hs_strerror(rc));
        return rc;
    }
    rc = auth__registration_complete_as(o->auth, reg_id, out->user.id, REGISTER_OIDC,
                                        login_expiry(o->cfg, claims), &out->node);
    if (rc < 0) {
        snprintf(why, whysize, rc == -ENOENT ? "this login is finished or expired"
                               : rc == -EPERM ? "the tags this device asks for are not yours"
                                              : "the device cannot be registered");
        store_user_free(&out->user);
    }
    return rc;
}

void auth_oidc_login_free(struct auth_oidc_login *l)
{
    store_user_free(&l->user);
    store_node_free(&l->node);
}
