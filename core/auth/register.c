/* Node registration: the pre-auth key path and the interactive path (a pending registration
 * an operator completes with `headscale nodes register`). Both end in register_node(), which
 * either re-registers this machine's existing node of the same owner in place (keeping its id
 * and addresses, as headscale does for tailscaled re-logins) or creates a new one. */
#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_internal.h"

#define REG_TTL_DEFAULT_US (15 * 60 * HS_USEC_PER_SEC)
#define REG_MAX_DEFAULT 1024 /* tuning.register_cache_max_entries, as headscale */

static bool strip_suffix(char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    if (n > m && strcasecmp(s + n - m, suffix) == 0) {
        s[n - m] = '\0';
        return true;
    }
    return false;
}

void auth_given_name(const char *hostname, char *out, size_t size)
{
    char buf[256];
    size_t n = 0;

    snprintf(buf, sizeof(buf), "%s", hostname ? hostname : "");
    if (!strip_suffix(buf, ".localdomain") && !strip_suffix(buf, ".local"))
        strip_suffix(buf, ".lan");
    for (const char *p = buf; *p && n < 63 && n + 1 < size; p++) {
        char c = (char)tolower((unsigned char)*p);
        if (c == ' ' || c == '.' || c == '@' || c == '_')
            c = '-';
        if (!(isalnum((unsigned char)c) || c == '-') || (c & 0x80))
            continue;
        if (c == '-' && n == 0)
            continue; /* no leading hyphen */
        out[n++] = c;
    }
    while (n && out[n - 1] == '-')
        n--;
    out[n] = '\0';
    if (n == 0)
        snprintf(out, size, "node");
}

/* Key expiry for a new login: what the client asked for, else node.expiry for user-owned
 * nodes; tagged nodes never expire. */
static int64_t login_expiry(const struct auth *a, const struct auth_node_request *rq,
                            bool tagged)
{
    if (rq->expiry)
        return rq->expiry;
    if (tagged || !a->cfg || !a->cfg->node_expiry_us)
        return 0;
    return hs_now_us() + a->cfg->node_expiry_us;
}

void auth_set_tag_check(struct auth *a, auth_tag_check_fn fn, void *arg)
{
    a->tag_check = fn;
    a->tag_check_arg = arg;
}

/* tailcfg.CheckTag: "tag:", a letter, then letters, digits and dashes. */
static bool tag_well_formed(const char *t)
{
    if (!hs_has_prefix(t, "tag:") || !isalpha((unsigned char)t[4]))
        return false;
    for (t += 4; *t; t++)
        if (!isalnum((unsigned char)*t) && *t != '-')
            return false;
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Hostinfo.RequestTags, sorted without duplicates, into out (empty when none). -EPERM (the
 * refused ones logged) unless each is well formed and allowed for user_id. */
static int requested_tags(struct auth *a, const char *hostinfo_json, uint64_t user_id,
                          struct hs_strv *out)
{
    json_t *hi = hostinfo_json ? json_loads(hostinfo_json, 0, NULL) : NULL, *t;
    struct hs_buf refused;
    size_t i;
    int rc = 0;

    hs_buf_init(&refused, 1024);
    json_array_foreach(json_object_get(hi, "RequestTags"), i, t) {
        const char *tag = json_string_value(t);
        if (tag && tag_well_formed(tag) && a->tag_check &&
            a->tag_check(a->tag_check_arg, user_id, tag)) {
            if (!hs_strv_contains(out, tag))
                hs_strv_push(out, tag);
            continue;
        }
        hs_buf_appendf(&refused, "%s%.64s", refused.len ? " " : "", tag ? tag : "(not a string)");
        rc = -EPERM;
    }
    if (rc < 0) {
        log_info("auth: requested tags [%s] are invalid or not permitted for user %llu",
                 refused.data, (unsigned long long)user_id);
        hs_strv_free(out);
    } else if (out->n > 1) {
        qsort(out->v, out->n, sizeof(*out->v), cmp_str);
    }
    hs_buf_free(&refused);
    json_decref(hi);
    return rc;
}

/* The owner of a node registered for user_id: user_id itself, or, if it asked for tags
 * (all allowed), no user and those tags. */
static int owner_of(struct auth *a, const struct auth_node_request *rq, uint64_t *user_id,
                    struct hs_strv *tags)
{
    int rc = requested_tags(a, rq->hostinfo_json, *user_id, tags);

    if (rc == 0 && tags->n)
        *user_id = 0; /* tagged: owned by its tags */
    return rc;
}

static bool same_owner(const struct store_node *n, uint64_t user_id, const struct hs_strv *tags)
{
    if (user_id)
        return n->user_id == user_id;
    return n->user_id == 0 && tags->n && n->tags.n;
}

/* Creates the node, or re-registers this machine's node of the same owner. */
static int register_node(struct auth *a, const struct auth_node_request *rq, uint64_t user_id,
                         const struct hs_strv *tags, enum register_method method,
                         uint64_t auth_key_id, bool ephemeral, struct store_node *out)
{
    struct store_ip_config ips = {
        .v4 = a->cfg ? &a->cfg->prefix_v4 : NULL,
        .v6 = a->cfg ? &a->cfg->prefix_v6 : NULL,
        .random = a->cfg && a->cfg->ip_allocation == IP_ALLOC_RANDOM,
    };
    struct store_node v = { 0 }, old;
    char name[64];
    int rc;

    memcpy(v.machine_key, rq->machine_key, STORE_KEY_LEN);
    memcpy(v.node_key, rq->node_key, STORE_KEY_LEN);
    v.hostinfo_json = (char *)rq->hostinfo_json;
    v.hostname = (char *)(rq->hostname ? rq->hostname : "");
    v.user_id = user_id;
    v.tags = *tags;
    v.register_method = method;
    v.auth_key_id = auth_key_id;
    v.ephemeral = ephemeral;
    v.expiry = login_expiry(a, rq, user_id == 0);
    v.last_seen = hs_now_us(); /* registering is being seen, as headscale records it */
    if (store_node_find(a->st, rq->machine_key, NULL, &old) == 0) {
        if (same_owner(&old, user_id, tags)) {
            rc = store_node_update(a->st, old.id,
                                   STORE_NODE_BIT(STORE_NODE_NODE_KEY) |
                                   STORE_NODE_BIT(STORE_NODE_HOSTINFO) |
                                   STORE_NODE_BIT(STORE_NODE_HOSTNAME) |
                                   STORE_NODE_BIT(STORE_NODE_REGISTER_METHOD) |
                                   STORE_NODE_BIT(STORE_NODE_TAGS) |
                                   STORE_NODE_BIT(STORE_NODE_AUTH_KEY) |
                                   STORE_NODE_BIT(STORE_NODE_EXPIRY) |
                                   STORE_NODE_BIT(STORE_NODE_LAST_SEEN),
                                   &v, out);
            store_node_free(&old);
            return rc;
        }
        store_node_free(&old);
    }
    auth_given_name(rq->hostname, name, sizeof(name));
    v.given_name = name;
    return store_node_create(a->st, &v, &ips, out);
}

void auth_outcomes(struct auth *a, uint64_t out[AUTH_OUTCOMES])
{
    for (int i = 0; i < AUTH_OUTCOMES; i++)
        out[i] = __atomic_load_n(&a->outcomes[i], __ATOMIC_RELAXED);
}

/* Counts rc's outcome (refused: AUTH_OUTCOMES when a failure is not counted); returns rc. */
static int counted(struct auth *a, int rc, enum auth_outcome ok, enum auth_outcome refused)
{
    enum auth_outcome o = rc == 0 ? ok : refused;

    if (o < AUTH_OUTCOMES)
        __atomic_add_fetch(&a->outcomes[o], 1, __ATOMIC_RELAXED);
    return rc;
}

static int register_with_key(struct auth *a, const char *key, const struct auth_node_request *rq,
                             struct store_node *out)
{
    struct store_preauthkey k;
    int rc;

    if ((rc = auth_preauthkey_check(a, key, &k)) < 0) {
        /* A container re-running `tailscale up --authkey` with its spent single-use key, on
         * the machine and node key it registered with, just gets its node back. */
        struct store_node n;
        char prefix[AUTH_PREFIX_LEN + 1];
        struct store_preauthkey used;
        if (rc != -EALREADY || auth_cred_prefix(AUTH_CRED_PREAUTH, key, prefix) < 0 ||
            store_preauthkey_get_by_prefix(a->st, prefix, &used) < 0)
            return rc;
        if (store_node_find(a->st, rq->machine_key, rq->node_key, &n) == 0 &&
            n.auth_key_id == used.id) {
            *out = n;
            rc = 0;
        }
        store_preauthkey_free(&used);
        return rc;
    }
    if (k.tags.n == 0) { /* a user's key: the node may ask for tags that user owns */
        if ((rc = owner_of(a, rq, &k.user_id, &k.tags)) < 0) {
            store_preauthkey_free(&k);
            return rc;
        }
    }
    /* The key is claimed before any node is touched: a single-use key lost to a concurrent
     * login then changes nothing (undoing a registration afterwards could delete or rewrite
     * a node this machine already had), and a key completes one registration only. */
    if ((rc = store_preauthkey_use(a->st, k.id)) < 0) {
        store_preauthkey_free(&k);
        return rc == -EACCES ? -EALREADY : rc;
    }
    rc = register_node(a, rq, k.user_id, &k.tags, REGISTER_AUTH_KEY, k.id,
                       k.ephemeral || rq->ephemeral, out);
    if (rc < 0 && !k.used)
        store_preauthkey_release(a->st, k.id); /* nothing registered: the key stays good */
    store_preauthkey_free(&k);
    return rc;
}

int auth_register_with_key(struct auth *a, const char *key, const struct auth_node_request *rq,
                           struct store_node *out)
{
    return counted(a, register_with_key(a, key, rq, out), AUTH_KEY_OK, AUTH_KEY_REFUSED);
}

/* The pending registration's data: what completing it needs. Hostinfo is kept as an object
 * (as text inside the JSON it would be escaped, up to twice as long). */
static char *registration_data(const struct auth_node_request *rq)
{
    json_t *hi = rq->hostinfo_json ? json_loads(rq->hostinfo_json, 0, NULL) : NULL;
    json_t *data = json_pack("{s:s, s:o, s:I, s:b}", "hostname", rq->hostname ? rq->hostname : "",
                             "hostinfo", json_is_object(hi) ? json_incref(hi) : json_object(),
                             "expiry", (json_int_t)rq->expiry, "ephemeral", rq->ephemeral);
    char *text = hs_json_dump(data, JSON_COMPACT);

    json_decref(hi);
    json_decref(data);
    return text;
}

static size_t registrations_max(const struct auth *a)
{
    return a->cfg && a->cfg->tuning_register_cache_max_entries > 0
               ? (size_t)a->cfg->tuning_register_cache_max_entries
               : REG_MAX_DEFAULT;
}

bool auth_registration_id_valid(const char *id)
{
    static const char prefix[] = "hskey-authreq-";
    size_t n = sizeof(prefix) - 1;

    if (!id || strncmp(id, prefix, n) != 0 || strlen(id) != n + AUTH_REG_ID_RANDOM)
        return false;
    for (id += n; *id; id++)
        if (!isalnum((unsigned char)*id) && *id != '-' && *id != '_')
            return false;
    return true;
}

int auth_registration_add(struct auth *a, const char *id, const struct auth_node_request *rq)
{
    struct store_registration r = { .id = (char *)id };
    int64_t now = hs_now_us();
    int rc;

    memcpy(r.machine_key, rq->machine_key, STORE_KEY_LEN);
    memcpy(r.node_key, rq->node_key, STORE_KEY_LEN);
    r.data_json = registration_data(rq);
    r.expires_at = now + (a->cfg && a->cfg->tuning_register_cache_expiration_us
                              ? a->cfg->tuning_register_cache_expiration_us
                              : REG_TTL_DEFAULT_US);
    rc = store_registration_create(a->st, &r);
    free(r.data_json);
    /* After the insert, not before: concurrent starts (workers, replicas) each trim what all
     * of them added, so the bound holds once they are done. The oldest give way, as in
     * headscale's LRU. */
    if (rc == 0 && store_registration_trim(a->st, now, registrations_max(a)) < 0)
        log_warnx("auth: cannot trim pending registrations");
    return rc;
}

int auth_registration_start(struct auth *a, const struct auth_node_request *rq,
                            char id[AUTH_REG_ID_MAX])
{
    uint8_t rnd[AUTH_REG_ID_RANDOM / 2];
    char hex[AUTH_REG_ID_RANDOM + 1];

    randombytes_buf(rnd, sizeof(rnd));
    hs_hex_encode(rnd, sizeof(rnd), hex);
    snprintf(id, AUTH_REG_ID_MAX, "hskey-authreq-%s", hex);
    return counted(a, auth_registration_add(a, id, rq), AUTH_LOGIN_STARTED, AUTH_OUTCOMES);
}

/* Hostinfo of a pending registration: an object, or text in rows older versions wrote. */
static char *registration_hostinfo(json_t *data)
{
    json_t *hi = json_object_get(data, "hostinfo");

    if (json_is_object(hi))
        return hs_json_dump(hi, JSON_COMPACT);
    return json_is_string(hi) ? hs_strdup(json_string_value(hi)) : NULL;
}

/* The registration id names, if it is still pending: not expired, completed or refused. */
static int pending_get(struct auth *a, const char *id, struct store_registration *r)
{
    int rc = store_registration_get(a->st, id, r);

    if (rc == 0 && (r->expires_at <= hs_now_us() || r->node_id || r->rejected)) {
        store_registration_free(r);
        rc = -ENOENT;
    }
    return rc;
}

/* Completes registration id for user_id (0: a tagged node keeping `tags`; otherwise the tags
 * the node asks for are checked for that user), with the node's key expiry (0: the usual). */
static int complete_as(struct auth *a, const char *id, uint64_t user_id,
                       const struct hs_strv *tags, enum register_method method, int64_t expiry,
                       struct store_node *out)
{
    uint64_t owner = user_id;
    struct store_registration r;
    struct auth_node_request rq = { 0 };
    struct hs_strv asked = { 0 };
    char *hostinfo = NULL;
    json_t *data;
    int rc;

    if ((rc = pending_get(a, id, &r)) < 0)
        return rc;
    data = json_loads(r.data_json ? r.data_json : "{}", 0, NULL);
    memcpy(rq.machine_key, r.machine_key, STORE_KEY_LEN);
    memcpy(rq.node_key, r.node_key, STORE_KEY_LEN);
    rq.hostname = hs_json_str(data, "hostname");
    rq.hostinfo_json = hostinfo = registration_hostinfo(data);
    rq.expiry = expiry ? expiry : json_integer_value(json_object_get(data, "expiry"));
    rq.ephemeral = json_is_true(json_object_get(data, "ephemeral"));
    rc = user_id ? owner_of(a, &rq, &owner, &asked) : 0;
    if (rc == 0)
        rc = register_node(a, &rq, owner, user_id ? &asked : tags, method, 0, rq.ephemeral, out);
    if (rc == 0 && (rc = store_registration_complete(a->st, id, user_id, out->id)) < 0)
        store_node_free(out);
    hs_strv_free(&asked);
    free(hostinfo);
    json_decref(data);
    store_registration_free(&r);
    return rc;
}

int auth_registration_complete(struct auth *a, const char *id, uint64_t user_id,
                               struct store_node *out)
{
    if (!user_id)
        return -EINVAL;
    return counted(a, complete_as(a, id, user_id, NULL, REGISTER_CLI, 0, out),
                   AUTH_LOGIN_COMPLETED, AUTH_OUTCOMES);
}

int auth__registration_complete_as(struct auth *a, const char *id, uint64_t user_id,
                                   enum register_method method, int64_t expiry,
                                   struct store_node *out)
{
    return counted(a, complete_as(a, id, user_id, NULL, method, expiry, out),
                   AUTH_LOGIN_COMPLETED, AUTH_OUTCOMES);
}

bool auth__registration_pending(struct auth *a, const char *id)
{
    struct store_registration r;

    if (!auth_registration_id_valid(id) || pending_get(a, id, &r) < 0)
        return false;
    store_registration_free(&r);
    return true;
}

int auth_registration_approve(struct auth *a, const char *id, struct store_node *out)
{
    struct store_registration r;
    struct store_node old;
    int rc;

    if ((rc = pending_get(a, id, &r)) < 0)
        return rc;
    rc = store_node_find(a->st, r.machine_key, NULL, &old);
    store_registration_free(&r);
    if (rc < 0)
        return rc == -ENOENT ? -ENXIO : rc;
    rc = old.user_id || old.tags.n
             ? complete_as(a, id, old.user_id, &old.tags, REGISTER_CLI, 0, out)
             : -ENXIO;
    store_node_free(&old);
    return counted(a, rc, AUTH_LOGIN_COMPLETED, AUTH_OUTCOMES);
}

int auth_registration_reject(struct auth *a, const char *id)
{
    return counted(a, store_registration_reject(a->st, id), AUTH_LOGIN_REJECTED, AUTH_OUTCOMES);
}

static int adopt_tags(struct auth *a, const struct store_node *n)
{
    struct store_node v = { 0 };
    int rc;

    if (!n->user_id || n->tags.n || requested_tags(a, n->hostinfo_json, n->user_id, &v.tags) < 0 ||
        !v.tags.n)
        return 0;
    /* Tagged: owned by its tags, without a user or a key expiry. */
    rc = store_node_update(a->st, n->id,
                           STORE_NODE_BIT(STORE_NODE_TAGS) | STORE_NODE_BIT(STORE_NODE_USER) |
                               STORE_NODE_BIT(STORE_NODE_EXPIRY),
                           &v, NULL);
    if (rc == 0)
        log_info("auth: node %llu (%s): tagged with the %zu tags it requested, as headscale "
                 "0.22.3 had it", (unsigned long long)n->id, n->given_name, v.tags.n);
    hs_strv_free(&v.tags);
    return rc;
}

int auth_adopt_requested_tags(struct auth *a)
{
    struct store_node *nodes;
    size_t n;
    bool pending;
    int rc;

    if ((rc = store_kv_take(a->st, STORE_KV_IMPORTED_REQUEST_TAGS, &pending)) < 0 || !pending)
        return rc;
    if ((rc = store_node_list(a->st, 0, &nodes, &n)) < 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = adopt_tags(a, &nodes[i]);
    store_node_list_free(nodes, n);
    return rc;
}
