/* POST /machine/register: logout, node-key rotation, re-login of a known node key, pre-auth
 * key login, and the interactive flow (AuthURL, then a Followup long-poll that completes when
 * an operator runs `headscale nodes register`). The order follows headscale's auth.go. */
#include <sodium.h>
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

/* What a client whose login an operator refused (`headscale auth reject`) is told; `tailscale
 * up` prints it and gives up. */
#define LOGIN_REFUSED "login refused by the server's administrator"

/* Retry-After for a follow-up refused because too many wait already. */
#define FOLLOWUP_BUSY_S 30
/* Pending registrations are swept this often (and expire at most this late). */
#define REG_SWEEP_EVERY_US (5 * HS_USEC_PER_SEC)

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

/* The success answer: who the node belongs to (user_id 0, tagged nodes: headscale's pseudo
 * user), read from the state; expiry as in struct store_node. */
static void reply_authorized(struct control_service *s, const struct control_request *rq,
                             uint64_t user_id, int64_t expiry)
{
    static const struct store_user tagged = { .id = 2147455555, .name = "tagged-devices",
                                              .display_name = "Tagged Devices" };
    const struct state_user *su;
    const struct store_user *u = &tagged;
    bool expired = expiry && expiry <= hs_now_us();
    json_t *resp;

    state_rdlock(s->state);
    if (user_id && (su = state_user_by_id(s->state, user_id)))
        u = &su->u;
    resp = json_pack("{s:o, s:o, s:b, s:b, s:s}", "User", user_json(u, false), "Login",
                     user_json(u, true), "NodeKeyExpired", expired, "MachineAuthorized",
                     !expired, "AuthURL", "");
    state_unlock(s->state);
    service_reply_json(s, rq, 200, resp);
    json_decref(resp);
}

/* What a registration request needs of a known node, copied from the state under its lock.
 * The store publishes each commit on the writer's thread before its call returns and the
 * state applies it there, so every node written before this request is in the state. */
struct known_node {
    uint64_t id, user_id;
    uint8_t machine_key[32];
    bool ephemeral;
    int64_t expiry;
};

/* The newest node with these keys (machine_key NULL: any), as store_node_find. */
static bool known_find(struct control_service *s, const uint8_t machine_key[32],
                       const uint8_t node_key[32], struct known_node *out)
{
    const struct state_node *sn;

    state_rdlock(s->state);
    sn = state_node_find(s->state, machine_key, node_key);
    if (sn) {
        *out = (struct known_node){ .id = sn->n.id, .user_id = sn->n.user_id,
                                    .ephemeral = sn->n.ephemeral, .expiry = sn->n.expiry };
        memcpy(out->machine_key, sn->n.machine_key, 32);
    }
    state_unlock(s->state);
    return sn != NULL;
}

static void reply_error_to(struct control_service *s, uint64_t conn_id, int32_t stream_id,
                           const char *msg)
{
    struct control_request rq = { .conn_id = conn_id, .stream_id = stream_id };
    json_t *resp = json_pack("{s:s, s:b, s:b}", "Error", msg, "MachineAuthorized", false,
                             "NodeKeyExpired", false);
    service_reply_json(s, &rq, 200, resp);
    json_decref(resp);
}

static void reply_error(struct control_service *s, const struct control_request *rq,
                        const char *msg)
{
    reply_error_to(s, rq->conn_id, rq->stream_id, msg);
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
    struct store_node v = { .expiry = hs_now_us() };
    struct known_node n;
    json_t *resp;

    if (known_find(s, rq->machine_key, node_key, &n)) {
        /* Stored as now, not the client's 1970 sentinel, so peers see a sane time. */
        if (n.ephemeral)
            state_node_delete(s->state, n.id);
        else
            state_node_write(s->state, n.id, STORE_NODE_BIT(STORE_NODE_EXPIRY), &v);
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

/* What the request says about the node. The Hostinfo is held to CONTROL_HOSTINFO_MAX: a
 * larger one is refused with an Error the client shows (`tailscale up` prints it). */
static int fill_node_request(struct control_service *s, const struct control_request *rq,
                             json_t *req, const uint8_t node_key[32],
                             struct auth_node_request *nr, char **hostinfo)
{
    json_t *hi = json_object_get(req, "Hostinfo");
    char msg[128];
    size_t len = 0;

    memset(nr, 0, sizeof(*nr));
    memcpy(nr->machine_key, rq->machine_key, 32);
    memcpy(nr->node_key, node_key, 32);
    *hostinfo = NULL;
    if (json_is_object(hi) && control__hostinfo_text(hi, hostinfo, &len) == -E2BIG) {
        if (control__log_due(&s->log_refused_at))
            log_info("control: conn %llu: register refused: Hostinfo of %zu bytes",
                     (unsigned long long)rq->conn_id, len);
        snprintf(msg, sizeof(msg), "Hostinfo too large: %zu bytes, the limit is %u", len,
                 CONTROL_HOSTINFO_MAX);
        reply_error(s, rq, msg);
        return -E2BIG;
    }
    nr->hostinfo_json = *hostinfo;
    nr->hostname = hs_json_str(hi, "Hostname");
    nr->ephemeral = json_is_true(json_object_get(req, "Ephemeral"));
    return 0;
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
    reply_authorized(s, rq, n.user_id, n.expiry);
    store_node_free(&n);
}

/* The pending registration's copy of the Hostinfo into *out (NULL: none was sent); a copy
 * over CONTROL_PENDING_HOSTINFO_MAX is refused with an Error. */
static int pending_hostinfo(struct control_service *s, const struct control_request *rq,
                            const struct auth_node_request *nr, char **out)
{
    json_t *hi = nr->hostinfo_json ? json_loads(nr->hostinfo_json, 0, NULL) : NULL;
    size_t len = 0;
    char msg[160];
    int rc;

    *out = NULL;
    rc = hi ? control__hostinfo_pending(hi, out, &len) : 0;
    json_decref(hi);
    if (rc != -E2BIG)
        return 0;
    if (control__log_due(&s->log_refused_at))
        log_info("control: conn %llu: login refused: Hostinfo of %zu bytes without what map "
                 "requests resend", (unsigned long long)rq->conn_id, len);
    snprintf(msg, sizeof(msg), "Hostinfo too large for a login: %zu bytes without Services, "
             "NetInfo, RoutableIPs and SSH_HostKeys, the limit is %u", len,
             CONTROL_PENDING_HOSTINFO_MAX);
    reply_error(s, rq, msg);
    return -E2BIG;
}

/* Whether a new pending registration may start now; if not, the client was told 429 and
 * when to ask again. Per client address (tuning.register_rate_limit), and for everyone
 * together no faster than the table turns over by itself: register_cache_max_entries per
 * register_cache_expiration. So a flood from any number of addresses writes a bounded number
 * of rows (PostgreSQL keeps every deleted row until it vacuums), and a pending registration,
 * once made, lives out its time instead of giving way within moments. */
static bool registration_allowed(struct control_service *s, const struct control_request *rq)
{
    static const uint8_t everyone[16];
    int64_t now = hs_monotonic_us();
    unsigned wait = control__reglimit_take(s->reglimit, rq->client_ip, now);
    const char *who = "from this address";
    char msg[128];

    if (!wait) {
        wait = control__reglimit_take(s->regturnover, everyone, now);
        who = "waiting";
    }
    if (!wait)
        return true;
    if (control__log_due(&s->log_refused_at))
        log_info("control: conn %llu: too many new registrations %s: told to wait %us",
                 (unsigned long long)rq->conn_id, who, wait);
    snprintf(msg, sizeof(msg), "too many new logins %s: try again in %us\n", who, wait);
    control_reply_busy(s->ctl, rq->conn_id, rq->stream_id, wait, msg);
    return false;
}

static void do_interactive(struct control_service *s, const struct control_request *rq,
                           const struct auth_node_request *full)
{
    char id[AUTH_REG_ID_MAX], *url, *hostinfo;
    struct auth_node_request nr = *full;
    json_t *resp;

    if (pending_hostinfo(s, rq, full, &hostinfo) < 0)
        return;
    nr.hostinfo_json = hostinfo;
    if (!registration_allowed(s, rq)) {
        /* told when to come back */
    } else if (auth_registration_start(s->auth, &nr, id) < 0) {
        service_reply_text(s, rq, 500, "cannot start registration\n");
    } else {
        url = hs_aprintf("%s/register/%s", s->cfg->server_url, id);
        resp = json_pack("{s:s, s:b, s:b}", "AuthURL", url, "MachineAuthorized", false,
                         "NodeKeyExpired", false);
        service_reply_json(s, rq, 200, resp);
        json_decref(resp);
        free(url);
    }
    free(hostinfo);
}

/* Under mu: the held follow-up of reg_id, unlinked, or NULL. */
static struct followup *followup_take(struct control_service *s, const char *reg_id)
{
    for (struct followup **pp = &s->followups, *f; (f = *pp); pp = &f->next) {
        if (strcmp(f->reg_id, reg_id) == 0) {
            *pp = f->next;
            s->nfollowups--;
            return f;
        }
    }
    return NULL;
}

/* Holds the request until the registration completes or its hold runs out. One per
 * registration (a client that asks again has given up on its older request), and no more
 * than there may be pending registrations; past that, 429. */
static void followup_hold(struct control_service *s, const struct control_request *rq,
                          const char *reg_id)
{
    struct followup *f = hs_xcalloc(1, sizeof(*f)), *old;
    size_t max = (size_t)s->cfg->tuning_register_cache_max_entries;
    bool held;

    f->conn_id = rq->conn_id;
    f->stream_id = rq->stream_id;
    snprintf(f->reg_id, sizeof(f->reg_id), "%s", reg_id);
    f->deadline = hs_monotonic_us() + FOLLOWUP_HOLD_US(s);
    pthread_mutex_lock(&s->mu);
    old = followup_take(s, reg_id);
    held = max == 0 || s->nfollowups < max;
    if (held) {
        f->next = s->followups;
        s->followups = f;
        s->nfollowups++;
        s->registrations_changed = true; /* check it once now: it may be done already */
        s->batch_due = s->batch_due ? s->batch_due : hs_monotonic_us();
        pthread_cond_signal(&s->cond);
    }
    pthread_mutex_unlock(&s->mu);
    if (old)
        reply_error_to(s, old->conn_id, old->stream_id, "login request superseded");
    free(old);
    if (!held) {
        free(f);
        control_reply_busy(s->ctl, rq->conn_id, rq->stream_id, FOLLOWUP_BUSY_S,
                           "too many logins waiting: try again later\n");
    }
}

/* Followup: the id is the last path segment of the AuthURL we handed out. Only the machine
 * that started a registration may wait for it; one that expired or gave way to newer ones
 * (tuning.register_cache_max_entries) is started afresh, as headscale does, so the client
 * shows a new URL. */
static void do_followup(struct control_service *s, const struct control_request *rq,
                        const char *url, const struct auth_node_request *nr)
{
    const char *slash = strrchr(url, '/'), *id = slash ? slash + 1 : "";
    struct store_registration r;
    bool mine, live, refused;

    if (!hs_has_prefix(id, "hskey-authreq-") || strlen(id) >= AUTH_REG_ID_MAX) {
        reply_error(s, rq, "unknown login URL");
        return;
    }
    if (state_registration_get(s->state, id, &r) < 0) {
        do_interactive(s, rq, nr);
        return;
    }
    mine = sodium_memcmp(r.machine_key, rq->machine_key, 32) == 0;
    live = r.node_id || r.expires_at > hs_now_us();
    refused = r.rejected;
    store_registration_free(&r);
    if (!mine)
        reply_error(s, rq, "unknown login URL");
    else if (refused && live)
        reply_error(s, rq, LOGIN_REFUSED);
    else if (!live)
        do_interactive(s, rq, nr);
    else
        followup_hold(s, rq, id);
}

/* A known node key (tailscaled restart) or a rotation from OldNodeKey. */
static bool do_known(struct control_service *s, const struct control_request *rq,
                     const uint8_t node_key[32], const uint8_t old_key[32])
{
    struct store_node v = { 0 };
    struct known_node n;

    if (known_find(s, NULL, node_key, &n)) {
        if (memcmp(n.machine_key, rq->machine_key, 32) != 0)
            service_reply_text(s, rq, 401, "node key belongs to another machine\n");
        else
            reply_authorized(s, rq, n.user_id, n.expiry);
        return true;
    }
    if (key_zero(old_key) || !known_find(s, rq->machine_key, old_key, &n))
        return false;
    if (n.expiry && n.expiry <= hs_now_us())
        return false; /* an expired node must log in again */
    memcpy(v.node_key, node_key, 32);
    state_node_write(s->state, n.id, STORE_NODE_BIT(STORE_NODE_NODE_KEY), &v);
    reply_authorized(s, rq, n.user_id, n.expiry);
    return true;
}

void register_handle(struct control_service *s, struct control_request *rq, json_t *req)
{
    uint8_t node_key[32], old_key[32];
    struct auth_node_request nr;
    const char *authkey = hs_json_str(json_object_get(req, "Auth"), "AuthKey");
    const char *followup = hs_json_str(req, "Followup");
    bool with_key = authkey && *authkey, follows = followup && *followup;
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
    if (!follows && !with_key && do_known(s, rq, node_key, old_key))
        return;
    if (fill_node_request(s, rq, req, node_key, &nr, &hostinfo) < 0)
        return;
    nr.expiry = expiry;
    if (follows)
        do_followup(s, rq, followup, &nr);
    else if (with_key)
        do_authkey(s, rq, &nr, authkey);
    else
        do_interactive(s, rq, &nr);
    free(hostinfo);
}

/* How a follow-up ends: completed (with the node), refused by an operator, or gone
 * (expired, given way to newer ones, or its hold ran out). */
struct followup_end {
    uint64_t node_id;
    bool refused;
};

/* True when the operator completed or refused it, or when it is gone. */
static bool followup_done(struct control_service *s, const char *reg_id,
                          struct followup_end *end)
{
    struct store_registration r;
    bool done;
    int rc = state_registration_get(s->state, reg_id, &r);

    *end = (struct followup_end){ 0 };
    if (rc < 0)
        return rc == -ENOENT;
    done = r.node_id != 0 || r.rejected;
    *end = (struct followup_end){ .node_id = r.node_id, .refused = r.rejected };
    store_registration_free(&r);
    return done;
}

static void followup_answer(struct control_service *s, struct followup *f,
                            const struct followup_end *end)
{
    struct control_request rq = { .conn_id = f->conn_id, .stream_id = f->stream_id };
    const struct state_node *sn;
    uint64_t user_id = 0;
    int64_t expiry = 0;
    bool have = false;

    if (end->node_id) {
        state_rdlock(s->state);
        if ((sn = state_node_by_id(s->state, end->node_id))) {
            have = true;
            user_id = sn->n.user_id;
            expiry = sn->n.expiry;
        }
        state_unlock(s->state);
    }
    if (have) {
        reply_authorized(s, &rq, user_id, expiry);
    } else {
        reply_error(s, &rq,
                    end->refused ? LOGIN_REFUSED : "login timed out: run tailscale up again");
    }
}

/* Answers the follow-ups whose registration an operator completed or that is gone, or whose
 * hold ran out. The list is taken out of the lock for the database look-ups and the rest put
 * back (they still count in nfollowups meanwhile). */
void register_check_followups(struct control_service *s)
{
    struct followup *list, *f, *keep = NULL;
    int64_t now = hs_monotonic_us();
    size_t answered = 0;
    bool check;

    pthread_mutex_lock(&s->mu);
    check = s->registrations_changed;
    s->registrations_changed = false;
    list = s->followups;
    s->followups = NULL;
    pthread_mutex_unlock(&s->mu);
    while ((f = list)) {
        struct followup_end end = { 0 };
        list = f->next;
        if ((check && followup_done(s, f->reg_id, &end)) || now >= f->deadline) {
            followup_answer(s, f, &end);
            free(f);
            answered++;
            continue;
        }
        f->next = keep;
        keep = f;
    }
    pthread_mutex_lock(&s->mu);
    s->nfollowups -= answered;
    while ((f = keep)) {
        keep = f->next;
        f->next = s->followups;
        s->followups = f;
    }
    pthread_mutex_unlock(&s->mu);
}

void register_sweep(struct control_service *s)
{
    int64_t now = hs_monotonic_us();
    int n;

    if (now < s->next_sweep)
        return;
    s->next_sweep = now + REG_SWEEP_EVERY_US;
    n = state_registration_trim(s->state, hs_now_us(),
                                (size_t)s->cfg->tuning_register_cache_max_entries);
    if (n > 0) {
        log_debug("control: %d pending registrations expired", n);
        pthread_mutex_lock(&s->mu);
        s->registrations_changed = true; /* their follow-ups can be told at once */
        pthread_mutex_unlock(&s->mu);
    }
}

void register_stream_closed(struct control_service *s, uint64_t conn_id, int32_t stream_id)
{
    pthread_mutex_lock(&s->mu);
    for (struct followup **pp = &s->followups, *f; (f = *pp); pp = &f->next) {
        if (f->conn_id == conn_id && f->stream_id == stream_id) {
            *pp = f->next;
            s->nfollowups--;
            free(f);
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
}
