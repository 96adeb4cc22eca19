/* POST /machine/register: logout, node-key rotation, re-login of a known node key, pre-auth
 * key login, and the interactive flow (AuthURL, then a Followup long-poll that completes when
 * an operator runs `headscale nodes register`). The order follows headscale's auth.go. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/service_internal.h"

/* How long a Followup request is held: as long as the pending registration lives. */
#define FOLLOWUP_HOLD_US(s) ((s)->cfg->tuning_register_cache_expiration_us \
                             ? (s)->cfg->tuning_register_cache_expiration_us \
                             : 15 * 60 * HS_USEC_PER_SEC)

/* Go's zero time.Time marshals as this; it means "no expiry requested". */
#define GO_ZERO_TIME "0001-01-01T00:00:00Z"

static json_t *user_json(const struct store_user *u, bool login)
{
    const char *login_name = u->email && *u->email ? u->email : u->name;
    const char *display = u->display_name && *u->display_name ? u->display_name : u->name;
    if (login)
        return json_pack("{s:I, s:s, s:s, s:s, s:s}", "ID", (json_int_t)u->id, "Provider",
                         u->provider ? u->provider : "", "LoginName", login_name, "DisplayName",
                         display, "ProfilePicURL", u->profile_pic_url ? u->profile_pic_url : "");
    return json_pack("{s:I, s:s, s:s}", "ID", (json_int_t)u->id, "DisplayName", display,
                     "ProfilePicURL", u->profile_pic_url ? u->profile_pic_url : "");
}

/* The success answer: who the node belongs to (tagged nodes: headscale's pseudo user). */
static void reply_authorized(struct control_service *s, const struct control_request *rq,
                             const struct store_node *n)
{
    struct store_user u = { .id = 2147455555, .name = "tagged-devices",
                            .display_name = "Tagged Devices" };
    bool have = n->user_id && store_user_get(s->st, n->user_id, &u) == 0;
    bool expired = n->expiry && n->expiry <= hs_now_us();
    json_t *resp = json_pack("{s:o, s:o, s:b, s:b, s:s}", "User", user_json(&u, false), "Login",
                             user_json(&u, true), "NodeKeyExpired", expired,
                             "MachineAuthorized", !expired, "AuthURL", "");

    service_reply_json(s, rq, 200, resp);
    json_decref(resp);
    if (have)
        store_user_free(&u);
}

static void reply_error(struct control_service *s, const struct control_request *rq,
                        const char *msg)
{
    json_t *resp = json_pack("{s:s, s:b, s:b}", "Error", msg, "MachineAuthorized", false,
                             "NodeKeyExpired", false);
    service_reply_json(s, rq, 200, resp);
    json_decref(resp);
}

static int parse_key(json_t *req, const char *field, const char *prefix, uint8_t out[32])
{
    const char *t = hs_json_str(req, field);
    if (!t || !*t) {
        memset(out, 0, 32);
        return 0;
    }
    return keys_parse(prefix, t, out);
}

static bool key_zero(const uint8_t k[32])
{
    static const uint8_t zero[32];
    return memcmp(k, zero, 32) == 0;
}

/* Expiry: absent or Go's zero time → 0; otherwise the time (in the past means logout). */
static int parse_expiry(json_t *req, int64_t *out)
{
    const char *t = hs_json_str(req, "Expiry");
    *out = 0;
    if (!t || !*t || strcmp(t, GO_ZERO_TIME) == 0)
        return 0;
    return hs_parse_rfc3339(t, out);
}

static void do_logout(struct control_service *s, const struct control_request *rq,
                      const uint8_t node_key[32])
{
    struct store_node n, v = { .expiry = hs_now_us() };
    json_t *resp;

    if (store_node_find(s->st, rq->machine_key, node_key, &n) == 0) {
        /* Stored as now, not the client's 1970 sentinel, so peers see a sane time. */
        if (n.ephemeral)
            store_node_delete(s->st, n.id);
        else
            store_node_update(s->st, n.id, STORE_NODE_BIT(STORE_NODE_EXPIRY), &v, NULL);
        store_node_free(&n);
    }
    resp = json_pack("{s:b, s:b}", "NodeKeyExpired", true, "MachineAuthorized", false);
    service_reply_json(s, rq, 200, resp);
    json_decref(resp);
}

static const char *key_error_text(int rc)
{
    switch (rc) {
    case -EKEYEXPIRED: return "authkey expired";
    case -EALREADY: return "authkey already used";
    case -EACCES: return "invalid pre auth key";
    case -EPERM: return "requested tags are invalid or not permitted";
    default: return "registration failed";
    }
}

static void fill_node_request(struct auth_node_request *nr, const struct control_request *rq,
                              json_t *req, const uint8_t node_key[32], char **hostinfo)
{
    json_t *hi = json_object_get(req, "Hostinfo");

    memset(nr, 0, sizeof(*nr));
    memcpy(nr->machine_key, rq->machine_key, 32);
    memcpy(nr->node_key, node_key, 32);
    *hostinfo = json_is_object(hi) ? hs_json_dump(hi, JSON_COMPACT) : NULL;
    nr->hostinfo_json = *hostinfo;
    nr->hostname = hs_json_str(hi, "Hostname");
    nr->ephemeral = json_is_true(json_object_get(req, "Ephemeral"));
}

static void do_authkey(struct control_service *s, const struct control_request *rq,
                       const struct auth_node_request *nr, const char *key)
{
    struct store_node n;
    int rc = auth_register_with_key(s->auth, key, nr, &n);

    if (rc < 0) {
        log_info("control: register with pre-auth key refused: %s", key_error_text(rc));
        reply_error(s, rq, key_error_text(rc));
        return;
    }
    log_info("control: node %llu (%s) registered with a pre-auth key",
             (unsigned long long)n.id, n.given_name);
    reply_authorized(s, rq, &n);
    store_node_free(&n);
}

static void do_interactive(struct control_service *s, const struct control_request *rq,
                           const struct auth_node_request *nr)
{
    char id[AUTH_REG_ID_MAX], *url;
    json_t *resp;
    int rc = auth_registration_start(s->auth, nr, id);

    if (rc < 0) {
        service_reply_text(s, rq, 500, "cannot start registration\n");
        return;
    }
    url = hs_aprintf("%s/register/%s", s->cfg->server_url, id);
    resp = json_pack("{s:s, s:b, s:b}", "AuthURL", url, "MachineAuthorized", false,
                     "NodeKeyExpired", false);
    service_reply_json(s, rq, 200, resp);
    json_decref(resp);
    free(url);
}

/* Followup: the id is the last path segment of the AuthURL we handed out. */
static void do_followup(struct control_service *s, const struct control_request *rq,
                        const char *url)
{
    const char *slash = strrchr(url, '/');
    struct followup *f;

    if (!slash || !hs_has_prefix(slash + 1, "hskey-authreq-") ||
        strlen(slash + 1) >= AUTH_REG_ID_MAX) {
        reply_error(s, rq, "unknown login URL");
        return;
    }
    f = hs_xcalloc(1, sizeof(*f));
    f->conn_id = rq->conn_id;
    f->stream_id = rq->stream_id;
    snprintf(f->reg_id, sizeof(f->reg_id), "%s", slash + 1);
    f->deadline = hs_monotonic_us() + FOLLOWUP_HOLD_US(s);
    pthread_mutex_lock(&s->mu);
    f->next = s->followups;
    s->followups = f;
    s->registrations_changed = true; /* check it once now: it may be done already */
    s->batch_due = s->batch_due ? s->batch_due : hs_monotonic_us();
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* A known node key (tailscaled restart) or a rotation from OldNodeKey. */
static bool do_known(struct control_service *s, const struct control_request *rq,
                     const uint8_t node_key[32], const uint8_t old_key[32])
{
    struct store_node n, v;

    if (store_node_find(s->st, NULL, node_key, &n) == 0) {
        if (memcmp(n.machine_key, rq->machine_key, 32) != 0) {
            store_node_free(&n);
            service_reply_text(s, rq, 401, "node key belongs to another machine\n");
            return true;
        }
        reply_authorized(s, rq, &n);
        store_node_free(&n);
        return true;
    }
    if (key_zero(old_key) || store_node_find(s->st, rq->machine_key, old_key, &n) < 0)
        return false;
    if (n.expiry && n.expiry <= hs_now_us()) {
        store_node_free(&n);
        return false; /* an expired node must log in again */
    }
    memset(&v, 0, sizeof(v));
    memcpy(v.node_key, node_key, 32);
    store_node_update(s->st, n.id, STORE_NODE_BIT(STORE_NODE_NODE_KEY), &v, NULL);
    memcpy(n.node_key, node_key, 32);
    reply_authorized(s, rq, &n);
    store_node_free(&n);
    return true;
}

void register_handle(struct control_service *s, struct control_request *rq, json_t *req)
{
    uint8_t node_key[32], old_key[32];
    struct auth_node_request nr;
    const char *authkey = hs_json_str(json_object_get(req, "Auth"), "AuthKey");
    const char *followup = hs_json_str(req, "Followup");
    char *hostinfo = NULL;
    int64_t expiry;

    if (parse_key(req, "NodeKey", "nodekey:", node_key) < 0 || key_zero(node_key) ||
        parse_key(req, "OldNodeKey", "nodekey:", old_key) < 0 || parse_expiry(req, &expiry) < 0) {
        service_reply_text(s, rq, 400, "malformed RegisterRequest\n");
        return;
    }
    if (expiry && expiry <= hs_now_us()) {
        do_logout(s, rq, node_key);
        return;
    }
    if (followup && *followup) {
        do_followup(s, rq, followup);
        return;
    }
    fill_node_request(&nr, rq, req, node_key, &hostinfo);
    nr.expiry = expiry;
    if (authkey && *authkey)
        do_authkey(s, rq, &nr, authkey);
    else if (!do_known(s, rq, node_key, old_key))
        do_interactive(s, rq, &nr);
    free(hostinfo);
}

/* True when the operator completed it; *node_id then names the node. */
static bool followup_done(struct control_service *s, const char *reg_id, uint64_t *node_id)
{
    struct store_registration r;
    bool done;

    if (store_registration_get(s->st, reg_id, &r) < 0)
        return false;
    done = r.node_id != 0;
    *node_id = r.node_id;
    store_registration_free(&r);
    return done;
}

static void followup_answer(struct control_service *s, struct followup *f, uint64_t node_id)
{
    struct control_request rq = { .conn_id = f->conn_id, .stream_id = f->stream_id };
    struct store_node n;

    if (node_id && store_node_get(s->st, node_id, &n) == 0) {
        reply_authorized(s, &rq, &n);
        store_node_free(&n);
    } else {
        reply_error(s, &rq, "login timed out: run tailscale up again");
    }
}

/* Answers the follow-ups whose registration an operator completed, or whose hold ran out.
 * The list is taken out of the lock for the database look-ups and the rest put back. */
void register_check_followups(struct control_service *s)
{
    struct followup *list, *f, *keep = NULL;
    int64_t now = hs_monotonic_us();
    bool check;

    pthread_mutex_lock(&s->mu);
    check = s->registrations_changed;
    s->registrations_changed = false;
    list = s->followups;
    s->followups = NULL;
    pthread_mutex_unlock(&s->mu);
    while ((f = list)) {
        uint64_t node_id = 0;
        list = f->next;
        if ((check && followup_done(s, f->reg_id, &node_id)) || now >= f->deadline) {
            followup_answer(s, f, node_id);
            free(f);
            continue;
        }
        f->next = keep;
        keep = f;
    }
    pthread_mutex_lock(&s->mu);
    while ((f = keep)) {
        keep = f->next;
        f->next = s->followups;
        s->followups = f;
    }
    pthread_mutex_unlock(&s->mu);
}
