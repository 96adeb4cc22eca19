/* Tests for core/state's policy: loading it from a file or the store, refusing a policy that
 * does not load or compile (the one in force stays), and recompiling its compiled form when,
 * and only when, something it depends on changes. A real SQLite store feeds the state
 * through the notify bus, as in the server. Several tests need the real compiler
 * (core/policy) to refuse or tell nodes apart. */
#include <criterion/criterion.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "state/state.h"

static struct fixture {
    char dir[64];
    char db[128], file[128];
    struct hs_config cfg;
    struct notify_bus *bus;
    struct store *st;
    struct state *s;
    uint64_t alice, bob;
    int policy_events;
    int online_events;
    int removed_events;
    int cap_events;
    int changed_node1; /* STATE_NODE_CHANGED for node 1 */
} fx;

#define POLICY_ALL "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}"
/* alice's devices may reach bob's; the policy's own test says so. */
#define POLICY_AB                                                                            \
    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"alice@\"], \"dst\": [\"bob@:*\"]}],"   \
    " \"tests\": [{\"src\": \"alice@\", \"accept\": [\"bob@:22\"]}]}"
/* The same without its test. */
#define POLICY_AB_UNTESTED                                                                   \
    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"alice@\"], \"dst\": [\"bob@:*\"]}]}"
/* A test that fails whatever the tailnet: only port 22 is open, the test wants 80. */
#define POLICY_FAILING_TEST                                                                  \
    "{\"hosts\": {\"srv\": \"100.100.0.1\"},"                                                \
    " \"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"srv:22\"]}],"          \
    " \"tests\": [{\"src\": \"100.64.0.1\", \"accept\": [\"srv:80\"]}]}"

static void on_change(void *arg, const struct state_change *ch)
{
    (void)arg;
    if (ch->kind == STATE_POLICY_CHANGED)
        __atomic_add_fetch(&fx.policy_events, 1, __ATOMIC_RELAXED);
    if (ch->kind == STATE_NODE_ONLINE)
        __atomic_add_fetch(&fx.online_events, 1, __ATOMIC_RELAXED);
    if (ch->kind == STATE_NODE_REMOVED)
        __atomic_add_fetch(&fx.removed_events, 1, __ATOMIC_RELAXED);
    if (ch->kind == STATE_NODE_CHANGED && ch->fields == STATE_F_CAP)
        __atomic_add_fetch(&fx.cap_events, 1, __ATOMIC_RELAXED);
    if (ch->kind == STATE_NODE_CHANGED && ch->id == 1)
        __atomic_add_fetch(&fx.changed_node1, 1, __ATOMIC_RELAXED);
}

static uint64_t add_user(const char *name)
{
    struct store_user in = { .name = (char *)name }, out;
    uint64_t id;

    cr_assert_eq(store_user_create(fx.st, &in, &out), 0);
    id = out.id;
    store_user_free(&out);
    return id;
}

static uint64_t add_node_seen(uint64_t user, const char *tag, int key, int64_t last_seen)
{
    static const struct ip_prefix v4 = { .family = AF_INET, .addr = { 100, 64 }, .bits = 10 };
    struct store_ip_config ips = { .v4 = &v4 };
    struct store_node in = { .user_id = user, .given_name = "host", .last_seen = last_seen },
                      out;
    uint64_t id;

    memset(in.machine_key, key, sizeof(in.machine_key));
    memset(in.node_key, key, sizeof(in.node_key));
    if (tag)
        hs_strv_push(&in.tags, tag);
    cr_assert_eq(store_node_create(fx.st, &in, &ips, &out), 0);
    hs_strv_free(&in.tags);
    id = out.id;
    store_node_free(&out);
    return id;
}

static uint64_t add_node(uint64_t user, const char *tag, int key)
{
    return add_node_seen(user, tag, key, 0);
}

static void write_file(const char *text)
{
    FILE *f = fopen(fx.file, "w");

    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    strcpy(fx.dir, "/tmp/hs-state-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir));
    snprintf(fx.db, sizeof(fx.db), "%s/db.sqlite", fx.dir);
    snprintf(fx.file, sizeof(fx.file), "%s/policy.hujson", fx.dir);
    fx.cfg = (struct hs_config){ .db_type = DB_SQLITE, .sqlite_path = fx.db, .sqlite_wal = true };
    fx.bus = notify_new();
    cr_assert_eq(store_open(&fx.cfg, fx.bus, &fx.st), 0);
    fx.alice = add_user("alice");
    fx.bob = add_user("bob");
    add_node(fx.alice, NULL, 1); /* 100.64.0.1 */
    add_node(fx.bob, NULL, 2);
    cr_assert_eq(state_new(fx.st, fx.bus, &fx.s), 0);
    state_listen(fx.s, on_change, NULL);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void teardown(void)
{
    state_free(fx.s);
    store_close(fx.st);
    notify_free(fx.bus);
    nftw(fx.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(state, .init = setup, .fini = teardown);

static uint64_t gen(void)
{
    uint64_t g;

    state_rdlock(fx.s);
    g = state_net_gen(state_net_current(fx.s));
    state_unlock(fx.s);
    return g;
}

static void expect_text(const char *want)
{
    char *text = NULL;
    int rc = state_policy_text(fx.s, &text, NULL);

    if (!want) {
        cr_expect_eq(rc, -ENOENT, "no policy in force");
        return;
    }
    cr_assert_eq(rc, 0);
    cr_expect_str_eq(text, want);
    free(text);
}

static bool sees(uint64_t a, uint64_t b)
{
    bool r;

    state_rdlock(fx.s);
    r = state_net_sees(state_net_current(fx.s), state_node_net_index(fx.s, a),
                       state_node_net_index(fx.s, b));
    state_unlock(fx.s);
    return r;
}

static bool is_online(uint64_t id)
{
    bool on;

    state_rdlock(fx.s);
    on = state_node_by_id(fx.s, id)->online;
    state_unlock(fx.s);
    return on;
}

Test(state, online_while_any_session_is_open)
{
    /* A reconnecting client's new stream opens before its old one's close is told. */
    state_node_session(fx.s, 1, true, 113);
    state_node_session(fx.s, 1, true, 113);
    cr_expect_eq(fx.online_events, 1);
    state_node_session(fx.s, 1, false, 0);
    cr_expect(is_online(1), "the late close of the old stream leaves the new one's node online");
    cr_expect_eq(fx.online_events, 1, "peers are told nothing");
    state_node_session(fx.s, 1, false, 0);
    cr_expect_not(is_online(1));
    cr_expect_eq(fx.online_events, 2);
    state_node_session(fx.s, 1, false, 0); /* a close too many must not go below zero */
    state_node_session(fx.s, 1, true, 113);
    cr_expect(is_online(1));
    state_node_session(fx.s, 99, true, 113); /* an unknown node: nothing */
    cr_expect_eq(fx.online_events, 3);
}

Test(state, a_new_capability_version_is_told_as_a_patchable_change)
{
    /* Peers sent the node at its registration hold it without Cap: its first map request
     * must tell them (found by the soak: deltas never carried it, full maps did). */
    state_node_session(fx.s, 1, true, 113);
    cr_expect_eq(fx.cap_events, 1);
    cr_expect(STATE_F_CAP & STATE_F_PATCHABLE, "Cap travels in a PeersChangedPatch");
    state_node_session(fx.s, 1, false, 0);
    state_node_session(fx.s, 1, true, 113);
    cr_expect_eq(fx.cap_events, 1, "the same version again is no change");
    state_node_session(fx.s, 1, true, 0);
    cr_expect_eq(fx.cap_events, 1, "a request without a version changes nothing");
    state_node_session(fx.s, 1, true, 130);
    cr_expect_eq(fx.cap_events, 2, "an upgraded client is a change");
}

/* The wall clock steps 2 h forward, then 2 h back: node 1's key expiry (1 h after the start)
 * is reported when it passes and again when, the clock set back, it is to come once more. */
Test(state, expiry_is_reported_when_the_wall_clock_steps_past_it_either_way)
{
    int64_t t = hs_now_us(), hour = 3600 * HS_USEC_PER_SEC;
    struct store_node v = { .expiry = t + hour };

    cr_assert_eq(store_node_update(fx.st, 1, STORE_NODE_BIT(STORE_NODE_EXPIRY), &v, NULL), 0);
    fx.changed_node1 = 0;
    state_check_expiry(fx.s, t + 1);
    cr_expect_eq(fx.changed_node1, 0, "not expired yet");
    state_check_expiry(fx.s, t + 2 * hour);
    cr_expect_eq(fx.changed_node1, 1, "expired by the new wall time: peers are told");
    state_check_expiry(fx.s, t + 2 * hour + 1);
    cr_expect_eq(fx.changed_node1, 1, "told once");
    state_check_expiry(fx.s, t + 1);
    cr_expect_eq(fx.changed_node1, 2, "the clock set back: not expired again, peers are told");
    state_check_expiry(fx.s, t + 2);
    cr_expect_eq(fx.changed_node1, 2);
    state_check_expiry(fx.s, t + hour);
    cr_expect_eq(fx.changed_node1, 3, "expired again when the clock passes it once more");
}

/* A node read from the store counts as offline since its last_seen on the monotonic clock
 * (the ephemeral collector's measure); a last_seen ahead of a wall clock set back counts as
 * now, not as hours still to wait. */
Test(state, offline_since_is_monotonic_from_last_seen)
{
    int64_t mono = hs_monotonic_us(), wall = hs_now_us(), ago, ahead;
    uint64_t seen = add_node_seen(fx.alice, NULL, 7, wall - 10 * HS_USEC_PER_SEC);
    uint64_t later = add_node_seen(fx.alice, NULL, 8, wall + 3600 * HS_USEC_PER_SEC);

    state_rdlock(fx.s);
    ago = state_node_by_id(fx.s, seen)->disconnected_at;
    ahead = state_node_by_id(fx.s, later)->disconnected_at;
    state_unlock(fx.s);
    cr_expect(ago <= mono - 10 * HS_USEC_PER_SEC + HS_USEC_PER_SEC &&
                  ago >= mono - 12 * HS_USEC_PER_SEC,
              "10 s ago on the monotonic clock: %lld vs %lld", (long long)ago, (long long)mono);
    cr_expect(ahead >= mono && ahead <= hs_monotonic_us(), "ahead of the wall clock: now");
    state_node_session(fx.s, 1, true, 113);
    state_node_session(fx.s, 1, false, 0);
    state_rdlock(fx.s);
    cr_expect_geq(state_node_by_id(fx.s, 1)->disconnected_at, mono, "a close: monotonic now");
    state_unlock(fx.s);
}

Test(state, no_policy_allows_all)
{
    expect_text(NULL);
    cr_expect(sees(1, 2) && sees(2, 1));
    cr_expect_not(sees(1, 1), "a node is not its own peer");
    state_rdlock(fx.s);
    cr_expect(state_net_all(state_net_current(fx.s)));
    cr_expect_eq(state_node_net_index(fx.s, 2), 1, "the current net is in state order");
    cr_expect_eq(state_node_net_index(fx.s, 99), STATE_NET_NONE);
    state_unlock(fx.s);
}

Test(state, file_policy_loads_and_bad_one_keeps_old)
{
    char err[512] = "";
    uint64_t g;

    write_file(POLICY_AB);
    state_policy_source(fx.s, STATE_POLICY_FILE, fx.file);
    cr_assert_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
    expect_text(POLICY_AB);
    cr_expect_eq(fx.policy_events, 1);
    cr_expect(sees(1, 2) && sees(2, 1), "alice reaches bob: they see each other");
    g = gen();

    write_file("{\"acls\": [}");
    cr_expect_lt(state_policy_reload(fx.s, err, sizeof(err)), 0);
    cr_expect(strstr(err, fx.file) != NULL, "the message names the file: %s", err);
    expect_text(POLICY_AB);
    cr_expect_eq(gen(), g, "nothing recompiled");
    cr_expect_eq(fx.policy_events, 1, "listeners hear nothing");

    write_file(POLICY_FAILING_TEST);
    cr_expect_eq(state_policy_reload(fx.s, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "test") != NULL, "its test fails: %s", err);
    expect_text(POLICY_AB);

    unlink(fx.file);
    cr_expect_lt(state_policy_reload(fx.s, err, sizeof(err)), 0, "a missing file is refused");
    expect_text(POLICY_AB);
}

Test(state, unchanged_text_is_not_recompiled)
{
    char err[512] = "";
    uint64_t g;

    write_file(POLICY_ALL);
    state_policy_source(fx.s, STATE_POLICY_FILE, fx.file);
    cr_assert_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
    g = gen();
    cr_assert_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(gen(), g);
    cr_expect_eq(fx.policy_events, 1);
}

Test(state, no_file_configured_is_allow_all)
{
    char err[512] = "";

    state_policy_source(fx.s, STATE_POLICY_FILE, "");
    cr_expect_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
    expect_text(NULL);
    cr_expect(sees(1, 2));
}

Test(state, store_policy_follows_the_bus)
{
    char err[512] = "";

    state_policy_source(fx.s, STATE_POLICY_STORE, NULL);
    cr_assert_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "no row yet: %s", err);
    expect_text(NULL);
    /* the event reloads it */
    cr_assert_eq(store_policy_set(fx.st, POLICY_AB, NULL, 0, NULL, NULL), 0);
    expect_text(POLICY_AB);
    cr_expect_eq(fx.policy_events, 1);
    /* A row that does not compile (written behind the API's back): the old one stays. */
    cr_assert_eq(store_policy_set(fx.st, POLICY_FAILING_TEST, NULL, 0, NULL, NULL), 0);
    expect_text(POLICY_AB);
    cr_expect_eq(fx.policy_events, 1);
    cr_expect_lt(state_policy_reload(fx.s, err, sizeof(err)), 0);
    cr_expect(strstr(err, "stored policy") != NULL, "%s", err);
}

Test(state, empty_stored_policy_is_none)
{
    state_policy_source(fx.s, STATE_POLICY_STORE, NULL);
    cr_assert_eq(store_policy_set(fx.st, POLICY_AB, NULL, 0, NULL, NULL), 0);
    expect_text(POLICY_AB);
    cr_assert_eq(store_policy_set(fx.st, "{\"acls\": []}", NULL, 0, NULL, NULL), 0);
    cr_expect_not(sees(1, 2), "a policy without rules lets no one through");
    /* how headscale's clients clear it */
    cr_assert_eq(store_policy_set(fx.st, "", NULL, 0, NULL, NULL), 0);
    expect_text("");
    cr_expect(sees(1, 2) && sees(2, 1), "no policy: every node reaches every other");
    cr_expect_eq(fx.policy_events, 3);
}

Test(state, store_mode_ignores_nothing_file_mode_ignores_rows)
{
    char err[512] = "";

    write_file(POLICY_ALL);
    state_policy_source(fx.s, STATE_POLICY_FILE, fx.file);
    cr_assert_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(store_policy_set(fx.st, POLICY_AB, NULL, 0, NULL, NULL), 0);
    expect_text(POLICY_ALL);
}

Test(state, check_installs_nothing)
{
    char err[512] = "";
    uint64_t g = gen();

    cr_expect_eq(state_policy_check(fx.s, POLICY_AB, strlen(POLICY_AB), POLICY_FORMAT_AUTO, err,
                                    sizeof(err)), 0, "%s", err);
    cr_expect_eq(state_policy_check(fx.s, POLICY_FAILING_TEST, strlen(POLICY_FAILING_TEST),
                                    POLICY_FORMAT_AUTO, err, sizeof(err)), -EINVAL);
    cr_expect_eq(state_policy_check(fx.s, "{", 1, POLICY_FORMAT_HUJSON, err, sizeof(err)),
                 -EINVAL);
    expect_text(NULL);
    cr_expect_eq(gen(), g);
    cr_expect_eq(fx.policy_events, 0);
}

Test(state, recompiled_when_the_policy_depends_on_it)
{
    struct store_node v = { 0 };
    char err[512] = "";
    uint64_t g, carol;

    write_file(POLICY_AB_UNTESTED);
    state_policy_source(fx.s, STATE_POLICY_FILE, fx.file);
    cr_assert_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
    g = gen();

    v.endpoints_json = "[\"192.0.2.1:41641\"]";
    v.hostinfo_json = "{\"Hostname\":\"h\",\"NetInfo\":{\"PreferredDERP\":1}}";
    cr_assert_eq(store_node_update(fx.st, 1, STORE_NODE_BIT(STORE_NODE_ENDPOINTS) |
                                   STORE_NODE_BIT(STORE_NODE_HOSTINFO), &v, NULL), 0);
    cr_expect_eq(gen(), g, "endpoints and Hostinfo: no recompile");

    v.hostinfo_json = "{\"Hostname\":\"h\",\"RoutableIPs\":[\"10.1.0.0/24\"]}";
    cr_assert_eq(store_node_update(fx.st, 1, STORE_NODE_BIT(STORE_NODE_HOSTINFO), &v, NULL), 0);
    cr_expect_eq(gen(), g + 1, "an advertised route: recompiled");

    hs_strv_push(&v.tags, "tag:x");
    cr_assert_eq(store_node_update(fx.st, 2, STORE_NODE_BIT(STORE_NODE_TAGS), &v, NULL), 0);
    hs_strv_free(&v.tags);
    cr_expect_eq(gen(), g + 2, "tags: recompiled");
    cr_expect_not(sees(1, 2), "bob's node is tagged now: not in bob@");

    carol = add_user("carol");
    cr_expect_eq(gen(), g + 3, "a user added: recompiled");
    cr_assert_eq(store_user_rename(fx.st, carol, "carla"), 0);
    cr_expect_eq(gen(), g + 4, "a user renamed: recompiled");
    add_node(carol, NULL, 3);
    cr_expect_eq(gen(), g + 5, "a node added: recompiled");
    cr_assert_eq(store_node_delete(fx.st, 3), 0);
    cr_expect_eq(gen(), g + 6, "a node removed: recompiled");
    cr_expect_eq(fx.policy_events, 1, "only the policy's own change is a policy event");
}

Test(state, nets_outlive_the_state_s_reference)
{
    struct state_net *old;
    char err[512] = "";

    state_rdlock(fx.s);
    old = state_net_current(fx.s);
    state_net_ref(old);
    state_unlock(fx.s);
    write_file(POLICY_AB);
    state_policy_source(fx.s, STATE_POLICY_FILE, fx.file);
    cr_assert_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
    add_node(fx.alice, NULL, 3);
    /* The old net still answers for the nodes it knew; the new node is not in it. */
    cr_expect(state_net_all(old));
    cr_expect_eq(state_net_count(old), 2);
    cr_expect_eq(state_net_index(old, 3), STATE_NET_NONE);
    cr_expect(state_net_sees(old, state_net_index(old, 1), state_net_index(old, 2)));
    state_net_unref(old);
}

/* A recompile for changed nodes does not run the policy's tests: when one no longer holds
 * (here bob's only node is tagged away, so "alice@ -> bob@:22" has no destination), the
 * tailnet change still takes effect. */
Test(state, tailnet_change_is_not_refused_by_the_tests)
{
    struct store_node v = { 0 };
    char err[512] = "";
    uint64_t g, late;

    write_file(POLICY_AB);
    state_policy_source(fx.s, STATE_POLICY_FILE, fx.file);
    cr_assert_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
    g = gen();
    hs_strv_push(&v.tags, "tag:x");
    cr_assert_eq(store_node_update(fx.st, 2, STORE_NODE_BIT(STORE_NODE_TAGS), &v, NULL), 0);
    hs_strv_free(&v.tags);
    cr_expect_eq(gen(), g + 1);
    cr_expect_not(sees(1, 2), "bob's node is tagged: not in bob@ any more");
    late = add_node(fx.bob, NULL, 3);
    cr_expect_eq(gen(), g + 2);
    cr_expect(sees(1, late), "bob's new node");
    state_rdlock(fx.s);
    cr_expect(state_net_exact(fx.s, state_net_current(fx.s)));
    state_unlock(fx.s);
    /* The same text reloaded is not compiled again; the policy itself is still in force. */
    cr_expect_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
    expect_text(POLICY_AB);
}

/* A rule naming a user the tailnet lacks: refused when set, checked or reloaded; taken at
 * start, where the operator may be about to create the user. */
#define POLICY_ZED                                                                           \
    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"zed@\"], \"dst\": [\"bob@:*\"]}]}"

Test(state, unknown_user_is_taken_and_matches_once_created)
{
    char err[512] = "";
    uint64_t zed, node;

    /* As headscale: a rule naming a user not created yet (an OIDC user who has not logged
     * in) is no error; it matches no one until the user exists. */
    cr_expect_eq(state_policy_check(fx.s, POLICY_ZED, strlen(POLICY_ZED), POLICY_FORMAT_AUTO,
                                    err, sizeof(err)), 0, "%s", err);
    write_file(POLICY_ZED);
    state_policy_source(fx.s, STATE_POLICY_FILE, fx.file);
    cr_expect_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
    expect_text(POLICY_ZED);
    cr_expect_not(sees(1, 2), "the rule is zed's alone");
    zed = add_user("zed");
    node = add_node(zed, NULL, 3);
    cr_expect(sees(node, 2), "zed's node reaches bob's once zed exists");
    cr_expect_not(sees(1, 2));
}

Test(state, tag_owners_decide_requested_tags)
{
    static const char pol[] =
        "{\"groups\": {\"group:ops\": [\"bob@\"]},"
        " \"tagOwners\": {\"tag:web\": [\"alice@\"], \"tag:db\": [\"group:ops\"]},"
        " \"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}";
    char err[512] = "";

    cr_expect(state_policy_tag_allowed(fx.s, fx.bob, "tag:anything"), "no policy: any tag");
    write_file(pol);
    state_policy_source(fx.s, STATE_POLICY_FILE, fx.file);
    cr_assert_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
    cr_expect(state_policy_tag_allowed(fx.s, fx.alice, "tag:web"));
    cr_expect_not(state_policy_tag_allowed(fx.s, fx.bob, "tag:web"));
    cr_expect(state_policy_tag_allowed(fx.s, fx.bob, "tag:db"), "through group:ops");
    cr_expect_not(state_policy_tag_allowed(fx.s, fx.alice, "tag:db"));
    cr_expect_not(state_policy_tag_allowed(fx.s, fx.alice, "tag:nowhere"), "not in tagOwners");
    cr_expect_not(state_policy_tag_allowed(fx.s, 0, "tag:web"), "no user");
    cr_expect_not(state_policy_tag_allowed(fx.s, 999, "tag:web"), "an unknown user");
}

Test(state, ssh_check_rules_point_at_the_server)
{
    static const char pol[] =
        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}],"
        " \"ssh\": [{\"action\": \"check\", \"src\": [\"alice@\"], \"dst\": [\"alice@\"],"
        "            \"users\": [\"root\"]}]}";
    char err[512] = "";
    struct hs_buf ssh;

    state_set_server_url(fx.s, "https://hs.example.com:8443");
    write_file(pol);
    state_policy_source(fx.s, STATE_POLICY_FILE, fx.file);
    cr_assert_eq(state_policy_reload(fx.s, err, sizeof(err)), 0, "%s", err);
    hs_buf_init(&ssh, 1 << 20);
    state_rdlock(fx.s);
    cr_assert_eq(policy_net_ssh(state_policy_net(fx.s), state_node_net_index(fx.s, 1), &ssh), 0);
    state_unlock(fx.s);
    cr_expect(strstr(ssh.data, "https://hs.example.com:8443/") != NULL, "%s", ssh.data);
    hs_buf_free(&ssh);
}

static uint64_t found(int machine, int node)
{
    uint8_t mk[32], nk[32];
    const struct state_node *sn;
    uint64_t id;

    memset(mk, machine, sizeof(mk));
    memset(nk, node, sizeof(nk));
    state_rdlock(fx.s);
    sn = state_node_find(fx.s, machine ? mk : NULL, nk);
    id = sn ? sn->n.id : 0;
    state_unlock(fx.s);
    return id;
}

Test(state, nodes_found_by_key_through_rotation_delete_and_repeats)
{
    struct store_node v = { 0 };
    uint64_t many[300];

    for (int i = 0; i < 300; i++) /* past several growths of the index */
        many[i] = add_node(fx.alice, NULL, 3 + (i % 250));
    cr_expect_eq(found(0, 1), 1);
    cr_expect_eq(found(1, 1), 1);
    cr_expect_eq(found(2, 1), 0, "node key 1 belongs to machine 1");
    cr_expect_eq(found(0, 3 + 249), many[249]);
    cr_expect_eq(found(0, 3), many[250], "a repeated key finds the newest node");
    cr_expect_eq(found(0, 255), 0);

    memset(v.node_key, 254, sizeof(v.node_key)); /* the client rotates its node key */
    cr_assert_eq(store_node_update(fx.st, 1, STORE_NODE_BIT(STORE_NODE_NODE_KEY), &v, NULL), 0);
    cr_expect_eq(found(0, 1), 0, "the old key finds nothing");
    cr_expect_eq(found(1, 254), 1);

    cr_assert_eq(store_node_delete(fx.st, many[250]), 0);
    cr_expect_eq(found(0, 3), many[0], "after the newest goes, the older answers");
    cr_assert_eq(store_node_delete(fx.st, many[0]), 0);
    cr_expect_eq(found(0, 3), 0);
}

/* SQL run on the database file from outside the store, as another process would. */
static void sql_aside(const char *sql)
{
    sqlite3 *db;

    cr_assert_eq(sqlite3_open(fx.db, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    sqlite3_close(db);
}

static char *given_name(uint64_t id)
{
    const struct state_node *sn;
    char *name;

    state_rdlock(fx.s);
    sn = state_node_by_id(fx.s, id);
    name = sn ? strdup(sn->n.given_name) : NULL;
    state_unlock(fx.s);
    return name;
}

Test(state, a_failed_read_keeps_the_node_until_everything_is_read_again)
{
    char *name;

    /* The database stops answering for nodes while a change to node 1 is announced. */
    sql_aside("ALTER TABLE nodes RENAME TO nodes_away");
    state_refresh_node(fx.s, 1);
    name = given_name(1);
    cr_assert_not_null(name, "a read that failed is not a deleted node");
    cr_expect_str_eq(name, "host");
    free(name);
    cr_expect_eq(fx.removed_events, 0, "nobody is told the node left");

    sql_aside("UPDATE nodes_away SET given_name = 'renamed' WHERE id = 1;"
              "ALTER TABLE nodes_away RENAME TO nodes");
    state_retry(fx.s);
    name = given_name(1);
    cr_expect_str_eq(name, "renamed", "read again once the database answers");
    free(name);
    cr_expect_eq(fx.removed_events, 0);

    sql_aside("UPDATE nodes SET given_name = 'unseen' WHERE id = 1");
    state_retry(fx.s); /* nothing failed since: no reading again */
    name = given_name(1);
    cr_expect_str_eq(name, "renamed");
    free(name);
}

/* ---- what nodes report: stored by the writer, newest first ---- */

/* Statements of one kind the store ran so far (its latency histogram's count). */
static uint64_t statements(enum store_op op)
{
    const struct metrics_hist *h = store_latency(fx.st, op);
    uint64_t n = 0;

    for (size_t i = 0; i <= h->nbounds; i++)
        n += h->n[i];
    return n;
}

static void report_endpoints(uint64_t id, const char *endpoints)
{
    struct store_node v = { .endpoints_json = (char *)endpoints };

    cr_assert_eq(state_node_report(fx.s, id, STORE_NODE_BIT(STORE_NODE_ENDPOINTS), &v), 0);
}

static char *endpoints_in_memory(uint64_t id)
{
    char *text;

    state_rdlock(fx.s);
    text = strdup(state_node_by_id(fx.s, id)->n.endpoints_json);
    state_unlock(fx.s);
    return text;
}

static struct store_node stored(uint64_t id)
{
    struct store_node n;

    cr_assert_eq(store_node_get(fx.st, id, &n), 0);
    return n;
}

static void expect_endpoints(uint64_t id, const char *memory, const char *store, const char *why)
{
    char *mem = endpoints_in_memory(id);
    struct store_node n = stored(id);

    cr_expect_str_eq(mem, memory, "in memory: %s", why);
    cr_expect_str_eq(n.endpoints_json, store, "stored: %s", why);
    free(mem);
    store_node_free(&n);
}

Test(state, reports_coalesce_into_one_write_per_node)
{
    uint64_t updates, commits;
    char ep[64];
    struct store_node n;

    state_set_write_interval(fx.s, 3600 * HS_USEC_PER_SEC); /* the test writes itself */
    updates = statements(STORE_OP_UPDATE);
    commits = statements(STORE_OP_COMMIT);
    for (int i = 0; i < 50; i++) {
        snprintf(ep, sizeof(ep), "[\"192.0.2.1:%d\"]", 1000 + i);
        report_endpoints(1, ep);
    }
    report_endpoints(2, "[\"192.0.2.2:1\"]");
    state_node_seen(fx.s, 2, 1234567);
    cr_expect_eq(statements(STORE_OP_UPDATE), updates, "nothing written before the writer's turn");
    expect_endpoints(1, ep, "[]", "peers have the newest at once, the store not yet");

    cr_assert_eq(state_flush(fx.s), 0);
    cr_expect_eq(statements(STORE_OP_UPDATE) - updates, 2, "one write per node");
    cr_expect_eq(statements(STORE_OP_COMMIT) - commits, 1, "all in one transaction");
    expect_endpoints(1, ep, ep, "the newest report is the one stored");
    n = stored(2);
    cr_expect_str_eq(n.endpoints_json, "[\"192.0.2.2:1\"]");
    cr_expect_eq(n.last_seen, 1234567);
    store_node_free(&n);

    cr_assert_eq(state_flush(fx.s), 0);
    cr_expect_eq(statements(STORE_OP_UPDATE) - updates, 2, "nothing is written twice");
    cr_expect_eq(state_node_report(fx.s, 99, STORE_NODE_BIT(STORE_NODE_ENDPOINTS), &n), -ENOENT);
}

Test(state, a_row_read_before_a_report_is_stored_keeps_the_report)
{
    struct store_node v = { .given_name = "renamed" };
    char *name;

    state_set_write_interval(fx.s, 3600 * HS_USEC_PER_SEC);
    report_endpoints(1, "[\"192.0.2.1:1\"]");
    cr_assert_eq(state_flush(fx.s), 0);
    report_endpoints(1, "[\"192.0.2.1:2\"]");

    state_refresh_node(fx.s, 1); /* the store's row carries the first report */
    expect_endpoints(1, "[\"192.0.2.1:2\"]", "[\"192.0.2.1:1\"]",
                     "a re-read row older than the report does not roll it back");

    /* An operator's write, announced on the bus and read back, is newer than memory's row:
     * it is installed, with the report still on top. */
    cr_assert_eq(store_node_update(fx.st, 1, STORE_NODE_BIT(STORE_NODE_GIVEN_NAME), &v, NULL), 0);
    name = given_name(1);
    cr_expect_str_eq(name, "renamed");
    free(name);
    expect_endpoints(1, "[\"192.0.2.1:2\"]", "[\"192.0.2.1:1\"]", "after an operator's write");

    cr_assert_eq(state_flush(fx.s), 0);
    expect_endpoints(1, "[\"192.0.2.1:2\"]", "[\"192.0.2.1:2\"]", "written at the writer's turn");
}

static void rename_node(uint64_t id, const char *name)
{
    struct store_node v = { .given_name = (char *)name };

    cr_assert_eq(store_node_update(fx.st, id, STORE_NODE_BIT(STORE_NODE_GIVEN_NAME), &v, NULL), 0);
}

static void expect_name(uint64_t id, const char *want, const char *why)
{
    char *name = given_name(id);

    cr_expect_str_eq(name, want, "%s", why);
    free(name);
}

Test(state, a_row_older_than_memory_is_not_installed)
{
    struct notify_event ev = { .entity = NOTIFY_NODE, .op = NOTIFY_UPDATE, .id = 1 };

    rename_node(1, "first");  /* revision 1 */
    rename_node(1, "second"); /* revision 2 */
    expect_name(1, "second", "each write is read back");

    /* A read that returns the row as it was before the second write (a stale replica's
     * view, a read that raced the write) is older than memory's. */
    sql_aside("UPDATE nodes SET given_name = 'first', revision = 1 WHERE id = 1");
    state_refresh_node(fx.s, 1);
    expect_name(1, "second", "a row of revision 1 does not replace revision 2");

    /* An announcement of a revision memory has (the echo of a write already read back)
     * reads nothing; a newer one is read. */
    sql_aside("UPDATE nodes SET given_name = 'unseen', revision = 2 WHERE id = 1");
    ev.revision = 2;
    notify_publish(fx.bus, &ev);
    expect_name(1, "second", "revision 2 is installed already: nothing is read");
    sql_aside("UPDATE nodes SET given_name = 'third', revision = 3 WHERE id = 1");
    ev.revision = 3;
    notify_publish(fx.bus, &ev);
    expect_name(1, "third", "revision 3 is newer: read and installed");
}

Test(state, the_writer_writes_reports_on_its_own)
{
    int64_t deadline = hs_monotonic_us() + 10 * HS_USEC_PER_SEC;
    struct store_node n;
    bool done = false;

    state_set_write_interval(fx.s, 20 * 1000); /* 20 ms */
    report_endpoints(1, "[\"192.0.2.1:7\"]");
    while (!done) {
        cr_assert_lt(hs_monotonic_us(), deadline, "the writer never wrote the report");
        usleep(10 * 1000);
        n = stored(1);
        done = strcmp(n.endpoints_json, "[\"192.0.2.1:7\"]") == 0;
        store_node_free(&n);
    }
}

Test(state, reports_left_are_written_when_the_state_is_freed)
{
    struct store_node n;

    state_set_write_interval(fx.s, 3600 * HS_USEC_PER_SEC);
    report_endpoints(2, "[\"192.0.2.2:7\"]");
    state_free(fx.s); /* what a clean stop does */
    fx.s = NULL;
    n = stored(2);
    cr_expect_str_eq(n.endpoints_json, "[\"192.0.2.2:7\"]");
    store_node_free(&n);
}
