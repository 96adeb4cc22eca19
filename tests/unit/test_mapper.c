/* Tests for core/mapper: full maps and deltas built from a state loaded from a real SQLite
 * store, and the wire encoding (LE length + JSON or a zstd frame).
 *
 * The store has no node writes yet, so the fixture inserts node rows with sqlite3 directly
 * into the migrated database file before state_new() loads them. */
#include <criterion/criterion.h>
#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "derp/derp.h"
#include "mapper/mapper.h"
#include "mapper/mapper_internal.h" /* mapper__nextdns */

#define TAGGED_USER 2147455555
#define HOUR (3600 * HS_USEC_PER_SEC)

static struct fixture {
    char dir[64];
    char path[128];
    struct hs_config cfg;
    struct notify_bus *bus;
    struct store *st;
    struct state *s;
    struct mapper *m;
    uint64_t alice, bob, carol;
    int64_t now;
} fx;

struct node_row {
    int id;
    const char *given;
    uint64_t user; /* 0 = NULL */
    const char *tags;
    bool disco;
    const char *hostinfo;
    const char *approved;
    int64_t last_seen, expiry;
};

static void key_text(char *out, size_t size, const char *prefix, int id, int which)
{
    uint8_t k[32];
    char hex[65];

    memset(k, id * 16 + which, sizeof(k));
    k[30] = (uint8_t)(id >> 8); /* unique past id 15 too */
    k[31] = (uint8_t)id;
    hs_hex_encode(k, sizeof(k), hex);
    snprintf(out, size, "%s%s", prefix, hex);
}

static void bind_time(sqlite3_stmt *st, int col, int64_t us)
{
    if (us)
        sqlite3_bind_int64(st, col, us);
    else
        sqlite3_bind_null(st, col);
}

static void insert_node(sqlite3 *db, const struct node_row *r)
{
    static const char sql[] =
        "INSERT INTO nodes (id, machine_key, node_key, disco_key, endpoints, host_info, ipv4, "
        "ipv6, hostname, given_name, user_id, register_method, tags, last_seen, expiry, "
        "approved_routes, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
        "?9, ?10, 'authkey', ?11, ?12, ?13, ?14, ?15, ?15)";
    char mkey[80], nkey[80], dkey[80], v4[32], v6[48], ep[64];
    sqlite3_stmt *st;

    key_text(mkey, sizeof(mkey), "mkey:", r->id, 1);
    key_text(nkey, sizeof(nkey), "nodekey:", r->id, 2);
    key_text(dkey, sizeof(dkey), "discokey:", r->id, 3);
    snprintf(v4, sizeof(v4), "100.64.%d.%d", r->id / 256, r->id % 256);
    snprintf(v6, sizeof(v6), "fd7a:115c:a1e0::%d", r->id);
    snprintf(ep, sizeof(ep), "[\"192.0.2.%d:41641\",\"[2001:db8::%d]:41641\"]", r->id, r->id);
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_int(st, 1, r->id);
    sqlite3_bind_text(st, 2, mkey, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, nkey, -1, SQLITE_TRANSIENT);
    if (r->disco)
        sqlite3_bind_text(st, 4, dkey, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, ep, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, r->hostinfo ? r->hostinfo : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, v4, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 8, v6, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 9, r->given, -1, SQLITE_STATIC);
    if (r->user)
        sqlite3_bind_int64(st, 10, (sqlite3_int64)r->user);
    sqlite3_bind_text(st, 11, r->tags ? r->tags : "[]", -1, SQLITE_STATIC);
    bind_time(st, 12, r->last_seen);
    bind_time(st, 13, r->expiry);
    sqlite3_bind_text(st, 14, r->approved ? r->approved : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 15, fx.now - 24 * HOUR);
    cr_assert_eq(sqlite3_step(st), SQLITE_DONE, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
}

static uint64_t add_user(const char *name, const char *display, const char *email)
{
    struct store_user in = { .name = (char *)name, .display_name = (char *)display,
                             .email = (char *)email }, out;
    uint64_t id;

    cr_assert_eq(store_user_create(fx.st, &in, &out), 0);
    id = out.id;
    store_user_free(&out);
    return id;
}

static void insert_nodes(void)
{
    const struct node_row rows[] = {
        { 1, "laptop", fx.alice, NULL, true,
          "{\"Hostname\":\"Laptop\",\"OS\":\"linux\",\"NetInfo\":{\"PreferredDERP\":900},"
          "\"RoutableIPs\":[\"10.0.0.0/24\",\"172.16.0.0/24\",\"0.0.0.0/0\",\"::/0\"]}",
          "[\"10.0.0.0/24\",\"192.168.0.0/24\",\"0.0.0.0/0\",\"::/0\"]", fx.now - HOUR,
          fx.now + 24 * HOUR },
        { 2, "server", fx.bob, NULL, false,
          "{\"Hostname\":\"server\",\"NetInfo\":{\"PreferredDERP\":2}}", NULL, fx.now - HOUR,
          fx.now - HOUR },
        { 3, "tagged", fx.alice, "[\"tag:srv\"]", true,
          "{\"NetInfo\":{\"PreferredDERP\":1}}", NULL, 0, 0 },
        { 4, "phone", fx.carol, NULL, true, NULL, NULL, 0, 0 },
    };
    sqlite3 *db;

    cr_assert_eq(sqlite3_open(fx.path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    for (size_t i = 0; i < HS_ARRAY_LEN(rows); i++)
        insert_node(db, &rows[i]);
    sqlite3_close(db);
}

static void set_dns(struct hs_config *c)
{
    static struct dns_split split = { .domain = "corp.example" };
    static struct dns_record rec = { .name = "grafana.example.com", .type = "A",
                                     .value = "100.64.0.3" };

    c->dns_magic_dns = true;
    c->dns_base_domain = "example.com";
    c->dns_override_local_dns = true;
    hs_strv_push(&c->dns_nameservers_global, "1.1.1.1");
    hs_strv_push(&c->dns_nameservers_global, "https://dns.nextdns.io/abc");
    if (split.nameservers.n == 0)
        hs_strv_push(&split.nameservers, "10.0.0.53");
    c->dns_split = &split;
    c->dns_nsplit = 1;
    hs_strv_push(&c->dns_search_domains, "search.example");
    c->dns_extra_records = &rec;
    c->dns_nextra_records = 1;
    cr_assert_eq(config_parse_prefix("100.64.0.0/10", &c->prefix_v4), 0);
    cr_assert_eq(config_parse_prefix("fd7a:115c:a1e0::/48", &c->prefix_v6), 0);
}

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    fx.now = hs_now_us();
    strcpy(fx.dir, "/tmp/hs-mapper-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir));
    snprintf(fx.path, sizeof(fx.path), "%s/db.sqlite", fx.dir);
    fx.cfg.db_type = DB_SQLITE;
    fx.cfg.sqlite_path = fx.path;
    fx.cfg.taildrop_enabled = true;
    fx.cfg.logtail_enabled = false;
    set_dns(&fx.cfg);
    fx.bus = notify_new();
    cr_assert_eq(store_open(&fx.cfg, fx.bus, &fx.st), 0);
    fx.alice = add_user("alice", "Alice", "alice@example.com");
    fx.bob = add_user("bob", NULL, NULL);
    fx.carol = add_user("Carol@Example.com", NULL, NULL);
    insert_nodes();
    cr_assert_eq(state_new(fx.st, fx.bus, &fx.s), 0);
    state_node_session(fx.s, 1, true, 106);
    state_node_session(fx.s, 3, true, 100);
    fx.cfg.tuning_map_peer_run = 16;
    fx.m = mapper_new(&fx.cfg, NULL);
    state_rdlock(fx.s);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void teardown(void)
{
    state_unlock(fx.s);
    mapper_free(fx.m);
    state_free(fx.s);
    store_close(fx.st);
    notify_free(fx.bus);
    hs_strv_free(&fx.cfg.dns_nameservers_global);
    hs_strv_free(&fx.cfg.dns_search_domains);
    nftw(fx.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(mapper, .init = setup, .fini = teardown);

/* ---- helpers ---- */

static json_t *by_id(const json_t *arr, json_int_t id)
{
    size_t i;
    json_t *v;

    json_array_foreach(arr, i, v) {
        if (json_integer_value(json_object_get(v, "ID")) == id)
            return v;
    }
    return NULL;
}

static bool has_str(const json_t *arr, const char *s)
{
    size_t i;
    json_t *v;

    json_array_foreach(arr, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return true;
    }
    return false;
}

static void expect_key(const json_t *node, const char *field, const char *prefix)
{
    const char *k = hs_json_str(node, field);

    cr_assert_not_null(k, "%s missing", field);
    cr_expect(hs_has_prefix(k, prefix), "%s = %s", field, k);
    cr_expect_eq(strlen(k), strlen(prefix) + 64, "%s = %s", field, k);
}

static json_t *full(uint64_t self)
{
    json_t *r = mapper_full(fx.m, fx.s, self, fx.now);

    cr_assert_not_null(r);
    return r;
}

/* ---- full map ---- */

Test(mapper, self_node)
{
    json_t *r = full(1), *n = json_object_get(r, "Node"), *addrs, *allowed;
    size_t i;
    json_t *a;

    cr_assert(json_is_object(n));
    cr_expect_eq(json_integer_value(json_object_get(n, "ID")), 1);
    cr_expect_str_eq(hs_json_str(n, "StableID"), "1");
    cr_expect_str_eq(hs_json_str(n, "Name"), "laptop.example.com.");
    cr_expect_eq(json_integer_value(json_object_get(n, "User")), (json_int_t)fx.alice);
    expect_key(n, "Key", "nodekey:");
    expect_key(n, "Machine", "mkey:");
    expect_key(n, "DiscoKey", "discokey:");
    cr_expect(json_is_true(json_object_get(n, "MachineAuthorized")));
    cr_expect_not_null(hs_json_str(n, "KeyExpiry"));
    cr_expect_null(json_object_get(n, "Expired"));
    cr_expect_not_null(hs_json_str(n, "Created"));
    cr_expect_eq(json_integer_value(json_object_get(n, "Cap")), 106);
    cr_expect(json_is_true(json_object_get(n, "Online")));
    cr_expect_null(json_object_get(n, "LastSeen"), "never on an online node");
    cr_expect_eq(json_integer_value(json_object_get(n, "HomeDERP")), 900);
    cr_expect_str_eq(hs_json_str(n, "DERP"), "127.3.3.40:900");
    cr_expect_str_eq(hs_json_str(json_object_get(n, "Hostinfo"), "Hostname"), "Laptop");
    cr_expect(has_str(json_object_get(n, "Endpoints"), "192.0.2.1:41641"));
    cr_expect_null(json_object_get(n, "ComputedName"));

    addrs = json_object_get(n, "Addresses");
    cr_expect_eq(json_array_size(addrs), 2);
    cr_expect(has_str(addrs, "100.64.0.1/32"));
    cr_expect(has_str(addrs, "fd7a:115c:a1e0::1/128"));
    allowed = json_object_get(n, "AllowedIPs");
    json_array_foreach(addrs, i, a)
        cr_expect(has_str(allowed, json_string_value(a)), "AllowedIPs lacks %s",
                  json_string_value(a));
    cr_expect(has_str(allowed, "10.0.0.0/24"), "approved and announced");
    cr_expect(has_str(allowed, "0.0.0.0/0") && has_str(allowed, "::/0"), "exit routes");
    cr_expect_not(has_str(allowed, "192.168.0.0/24"), "approved, not announced");
    cr_expect_not(has_str(allowed, "172.16.0.0/24"), "announced, not approved");
    cr_expect_eq(json_array_size(allowed), 5);

    cr_expect_not_null(json_object_get(json_object_get(n, "CapMap"),
                                       "https://tailscale.com/cap/file-sharing"));
    cr_expect_not_null(json_object_get(json_object_get(n, "CapMap"),
                                       "https://tailscale.com/cap/ssh"), "its own: SSH");
    cr_expect_not_null(json_object_get(json_object_get(n, "CapMap"),
                                       "https://tailscale.com/cap/is-admin"));
    cr_expect(json_is_false(json_array_get(
        json_object_get(json_object_get(n, "CapMap"), "default-auto-update"), 0)));
    cr_expect_eq(json_object_size(json_object_get(n, "CapMap")), 4);
    json_decref(r);
}

Test(mapper, peers)
{
    json_t *r = full(1), *peers = json_object_get(r, "Peers"), *p;

    cr_expect_eq(json_array_size(peers), 3);
    cr_expect_null(by_id(peers, 1), "self is not a peer");

    p = by_id(peers, 2);
    cr_assert_not_null(p);
    cr_expect_null(json_object_get(p, "DiscoKey"), "zero disco key omitted");
    cr_expect(json_is_false(json_object_get(p, "Online")));
    cr_expect_not_null(hs_json_str(p, "LastSeen"));
    cr_expect(json_is_true(json_object_get(p, "Expired")));
    cr_expect_null(json_object_get(p, "HomeDERP"));
    cr_expect_str_eq(hs_json_str(p, "Name"), "server.example.com.");

    p = by_id(peers, 3);
    cr_assert_not_null(p);
    expect_key(p, "DiscoKey", "discokey:");
    cr_expect(json_is_true(json_object_get(p, "Online")));
    cr_expect_null(json_object_get(p, "LastSeen"));
    cr_expect_eq(json_integer_value(json_object_get(p, "HomeDERP")), 1);
    cr_expect_eq(json_integer_value(json_object_get(p, "User")), TAGGED_USER,
                 "a tagged node belongs to tagged-devices even with a user_id");
    cr_expect(has_str(json_object_get(p, "Tags"), "tag:srv"));
    cr_expect(has_str(json_object_get(p, "AllowedIPs"), "100.64.0.3/32"));
    cr_expect_null(json_object_get(json_object_get(p, "CapMap"), "https://tailscale.com/cap/ssh"),
                   "what a node may do on itself is not in its peers' view of it");
    json_decref(r);
}

/* Node 2's key expired an hour ago. It is told of no one and may reach no one (it must log in
 * again); the others see it Expired, with no way to reach it: no endpoints, no home DERP, a
 * node key that is not its own. */
Test(mapper, expired_node_sees_no_one_and_is_seen_expired)
{
    json_t *r = full(2), *me = json_object_get(r, "Node"), *p, *peers;
    const char *key;

    cr_expect_eq(json_array_size(json_object_get(r, "Peers")), 0);
    cr_expect_eq(json_array_size(json_object_get(r, "PacketFilter")), 0, "an expired node may "
                 "reach no one");
    cr_expect_null(json_object_get(r, "SSHPolicy"));
    cr_expect_eq(json_array_size(json_object_get(r, "UserProfiles")), 1);
    cr_expect(json_is_true(json_object_get(me, "Expired")));
    cr_expect_not_null(hs_json_str(me, "KeyExpiry"), "the client sees its key expired: "
                       "NeedsLogin");
    cr_expect_not(hs_has_prefix(hs_json_str(me, "Key"), "nodekey:6da774d5d774"),
                  "its own Node carries its real key");
    json_decref(r);

    r = full(1);
    peers = json_object_get(r, "Peers");
    p = by_id(peers, 2);
    cr_assert_not_null(p);
    cr_expect(json_is_true(json_object_get(p, "Expired")));
    cr_expect_not_null(hs_json_str(p, "KeyExpiry"));
    cr_expect_eq(json_array_size(json_object_get(p, "Endpoints")), 0);
    cr_expect_null(json_object_get(p, "HomeDERP"));
    cr_expect_null(json_object_get(p, "DERP"));
    key = hs_json_str(p, "Key");
    cr_assert_not_null(key);
    cr_expect(hs_has_prefix(key, "nodekey:6da774d5d774"), "Key = %s", key);
    cr_expect_eq(strlen(key), strlen("nodekey:") + 64);
    p = by_id(peers, 3);
    cr_expect_not(hs_has_prefix(hs_json_str(p, "Key"), "nodekey:6da774d5d774"));
    cr_expect_eq(json_integer_value(json_object_get(p, "HomeDERP")), 1);
    json_decref(r);
}

Test(mapper, user_profiles_cover_every_user)
{
    json_t *r = full(4), *ups = json_object_get(r, "UserProfiles"), *u, *peers, *p;
    size_t i;

    cr_expect_eq(json_array_size(ups), 4);
    u = by_id(ups, (json_int_t)fx.alice);
    cr_assert_not_null(u);
    cr_expect_str_eq(hs_json_str(u, "LoginName"), "alice@example.com");
    cr_expect_str_eq(hs_json_str(u, "DisplayName"), "Alice");
    u = by_id(ups, (json_int_t)fx.bob);
    cr_assert_not_null(u);
    cr_expect_str_eq(hs_json_str(u, "LoginName"), "bob");
    cr_expect_str_eq(hs_json_str(u, "DisplayName"), "bob");
    u = by_id(ups, TAGGED_USER);
    cr_assert_not_null(u);
    cr_expect_str_eq(hs_json_str(u, "LoginName"), "tagged-devices");

    /* Every User referenced by Node and Peers has its profile. */
    cr_expect_not_null(by_id(ups, json_integer_value(json_object_get(json_object_get(r, "Node"),
                                                                     "User"))));
    peers = json_object_get(r, "Peers");
    json_array_foreach(peers, i, p)
        cr_expect_not_null(by_id(ups, json_integer_value(json_object_get(p, "User"))));
    json_decref(r);
}

Test(mapper, dns_config)
{
    json_t *r = full(1), *dns = json_object_get(r, "DNSConfig"), *routes, *res;
    char zone[64];

    cr_assert(json_is_object(dns));
    cr_expect(json_is_true(json_object_get(dns, "Proxied")));
    res = json_object_get(dns, "Resolvers");
    cr_expect_eq(json_array_size(res), 2);
    cr_expect_str_eq(hs_json_str(json_array_get(res, 0), "Addr"), "1.1.1.1");
    /* headscale tells NextDNS which device asks */
    cr_expect_str_eq(hs_json_str(json_array_get(res, 1), "Addr"),
                     "https://dns.nextdns.io/abc?device_ip=100.64.0.1&device_model=linux"
                     "&device_name=laptop");
    cr_expect_null(json_object_get(dns, "FallbackResolvers"));
    cr_expect_str_eq(hs_json_str(r, "Domain"), "example.com", "no server_url: base_domain");

    routes = json_object_get(dns, "Routes");
    /* headscale 0.29.3 routes no base domain, and writes zones without the final dot */
    cr_expect_null(json_object_get(routes, "example.com"));
    cr_expect_str_eq(hs_json_str(json_array_get(json_object_get(routes, "corp.example"), 0),
                                 "Addr"), "10.0.0.53");
    for (int i = 64; i <= 127; i++) {
        snprintf(zone, sizeof(zone), "%d.100.in-addr.arpa", i);
        cr_expect(json_is_array(json_object_get(routes, zone)), "%s", zone);
    }
    cr_expect_null(json_object_get(routes, "128.100.in-addr.arpa"));
    cr_expect(json_is_array(json_object_get(routes, "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa")));
    cr_expect_eq(json_object_size(routes), 1 + 64 + 1);

    cr_expect_eq(json_array_size(json_object_get(dns, "Domains")), 2);
    cr_expect_str_eq(json_string_value(json_array_get(json_object_get(dns, "Domains"), 0)),
                     "example.com");
    cr_expect_str_eq(json_string_value(json_array_get(json_object_get(dns, "Domains"), 1)),
                     "search.example");
    cr_expect_str_eq(hs_json_str(json_array_get(json_object_get(dns, "ExtraRecords"), 0), "Name"),
                     "grafana.example.com");
    json_decref(r);
}

Test(mapper, dns_without_override_or_magic)
{
    json_t *r, *dns, *routes;

    fx.cfg.dns_override_local_dns = false;
    fx.cfg.dns_magic_dns = false;
    r = full(1);
    dns = json_object_get(r, "DNSConfig");
    cr_expect_null(json_object_get(dns, "Resolvers"));
    cr_expect_eq(json_array_size(json_object_get(dns, "FallbackResolvers")), 2);
    cr_expect_null(json_object_get(dns, "Proxied"), "false is left out, as headscale does");
    routes = json_object_get(dns, "Routes");
    cr_expect_eq(json_object_size(routes), 1, "split DNS only");
    json_decref(r);

    fx.cfg.dns_base_domain = "";
    r = full(1);
    cr_expect_str_eq(hs_json_str(r, "Domain"), "alice", "no base domain: the user name");
    cr_expect_str_eq(hs_json_str(json_object_get(r, "Node"), "Name"), "laptop.");
    json_decref(r);
}

Test(mapper, domain_is_server_url_host)
{
    static const char *const urls[][2] = {
        { "https://hs.example.net", "hs.example.net" },
        { "http://127.0.0.1:8080", "127.0.0.1" },
        { "https://[fd00::1]:443/x", "fd00::1" },
        { "https://u:p@hs.example.net:8443/", "hs.example.net" },
    };
    json_t *r;

    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        fx.cfg.server_url = (char *)urls[i][0];
        r = full(1);
        cr_expect_str_eq(hs_json_str(r, "Domain"), urls[i][1], "%s", urls[i][0]);
        json_decref(r);
    }
    fx.cfg.legacy = true; /* 0.22.3: the base domain */
    r = full(1);
    cr_expect_str_eq(hs_json_str(r, "Domain"), "example.com");
    json_decref(r);
    fx.cfg.server_url = NULL;
}

Test(mapper, tailnet_fields)
{
    json_t *r = full(1);
    json_t *want = json_loads("[{\"SrcIPs\":[\"*\"],\"DstPorts\":[{\"IP\":\"*\",\"Ports\":"
                              "{\"First\":0,\"Last\":65535}}]}]", 0, NULL);
    int64_t t;

    cr_expect(json_equal(json_object_get(r, "PacketFilter"), want));
    /* opt.Bool: Tailscale's decoder accepts true/false/null only; a string fails the map. */
    cr_expect(json_is_false(json_object_get(r, "CollectServices")));
    cr_assert_eq(hs_parse_rfc3339(hs_json_str(r, "ControlTime"), &t), 0);
    cr_expect_lt(llabs(t - fx.now), HS_USEC_PER_SEC);
    cr_expect_eq(json_object_size(json_object_get(json_object_get(r, "DERPMap"), "Regions")), 0);
    cr_expect(json_is_true(json_object_get(json_object_get(r, "Debug"), "DisableLogTail")));
    json_decref(want);
    json_decref(r);

    cr_expect_null(mapper_full(fx.m, fx.s, 99, fx.now), "unknown self");
}

/* taildrop.enabled, randomize_client_port, logtail.enabled and auto_update.enabled, set the
 * other way. */
Test(mapper, config_switches_reach_the_map)
{
    json_t *r, *caps;

    fx.cfg.taildrop_enabled = false;
    fx.cfg.randomize_client_port = true;
    fx.cfg.logtail_enabled = true;
    fx.cfg.auto_update_enabled = true;
    r = full(1);
    caps = json_object_get(json_object_get(r, "Node"), "CapMap");
    cr_expect_null(json_object_get(caps, "https://tailscale.com/cap/file-sharing"));
    cr_expect_not_null(json_object_get(caps, "randomize-client-port"));
    cr_expect(json_is_true(json_array_get(json_object_get(caps, "default-auto-update"), 0)));
    cr_expect_null(json_object_get(r, "Debug"), "logtail allowed: no DisableLogTail");
    json_decref(r);
}

Test(mapper, derp_map_comes_from_derpmap)
{
    struct hs_config dcfg = { 0 };
    struct derpmap *dm;
    struct mapper *m;
    json_t *r;

    hs_strv_push(&dcfg.derp_paths, HS_SOURCE_DIR "/tests/unit/data/derp/derp.yaml");
    cr_assert_eq(derpmap_new(&dcfg, &dm), 0);
    m = mapper_new(&fx.cfg, dm);
    r = mapper_full(m, fx.s, 1, fx.now);
    cr_expect_eq(json_integer_value(json_object_get(
                     json_object_get(json_object_get(json_object_get(r, "DERPMap"), "Regions"),
                                     "900"),
                     "RegionID")),
                 900);
    json_decref(r);
    mapper_free(m);
    derpmap_free(dm);
    hs_strv_free(&dcfg.derp_paths);
}

/* ---- names ---- */

static void expect_fqdn(uint64_t id, const char *want)
{
    char out[256];

    mapper_fqdn(fx.m, fx.s, state_node_by_id(fx.s, id), out, sizeof(out));
    cr_expect_str_eq(out, want);
}

Test(mapper, fqdn_forms)
{
    expect_fqdn(1, "laptop.example.com.");
    fx.cfg.dns_base_domain = "example.com."; /* a trailing dot in the config is tolerated */
    expect_fqdn(1, "laptop.example.com.");

    fx.cfg.dns_use_username_in_magic_dns = true; /* 0.22 layout */
    expect_fqdn(1, "laptop.alice.example.com.");
    expect_fqdn(3, "tagged.alice.example.com."); /* 0.22 had owners for tagged nodes */
    fx.cfg.oidc_strip_email_domain = true;
    expect_fqdn(4, "phone.carol.example.com.");
    fx.cfg.oidc_strip_email_domain = false;
    expect_fqdn(4, "phone.carol.example.com.example.com.");

    fx.cfg.dns_base_domain = "";
    expect_fqdn(1, "laptop.");
}

/* ---- DNS: the 0.22 layout, the extra records file, NextDNS ---- */

Test(mapper, dns_022_user_domains)
{
    json_t *r, *dns, *routes;

    fx.cfg.dns_use_username_in_magic_dns = true; /* what the 0.22 layout sets */
    r = full(4); /* carol's phone sees alice's, bob's and the tagged node (owned by alice) */
    dns = json_object_get(r, "DNSConfig");
    cr_expect_str_eq(hs_json_str(json_object_get(r, "Node"), "Name"),
                     "phone.carol.example.com.example.com.");
    cr_expect(has_str(json_object_get(dns, "Domains"), "carol.example.com.example.com"),
              "own user's domain");
    cr_expect_not(has_str(json_object_get(dns, "Domains"), "alice.example.com"));
    routes = json_object_get(dns, "Routes");
    cr_expect(json_is_array(json_object_get(routes, "alice.example.com")));
    cr_expect(json_is_array(json_object_get(routes, "bob.example.com")));
    cr_expect(json_is_array(json_object_get(routes, "carol.example.com.example.com")));
    cr_expect_null(json_object_get(routes, "tagged-devices.example.com"),
                   "a tagged node is named after its owner in 0.22");
    json_decref(r);

    fx.cfg.dns_magic_dns = false; /* no MagicDNS: no user domains, bare names */
    fx.cfg.legacy = true;
    r = full(1);
    dns = json_object_get(r, "DNSConfig");
    cr_expect_not(has_str(json_object_get(dns, "Domains"), "alice.example.com"));
    cr_expect_null(json_object_get(json_object_get(dns, "Routes"), "alice.example.com"));
    cr_expect_str_eq(hs_json_str(json_object_get(r, "Node"), "Name"), "laptop.");
    json_decref(r);
}

static json_t *records_of(json_t *msg)
{
    return json_object_get(json_object_get(msg, "DNSConfig"), "ExtraRecords");
}

Test(mapper, dns_extra_records_replaced)
{
    struct dns_record *v;
    size_t n;
    char err[128];
    const char *file = "[{\"Name\":\"db.example.com\",\"Type\":\"A\",\"Value\":\"100.64.0.9\"},"
                       "{\"name\":\"v6.example.com\",\"type\":\"AAAA\",\"value\":\"fd7a::9\"}]";
    json_t *msg, *r;

    msg = mapper_dns_update(fx.m, fx.s, 1);
    cr_assert_not_null(msg);
    cr_expect_eq(json_object_size(msg), 1, "a DNSConfig alone");
    cr_expect_str_eq(hs_json_str(json_array_get(records_of(msg), 0), "Name"),
                     "grafana.example.com", "the config's records until a file is read");
    json_decref(msg);

    cr_assert_eq(config_dns_records_parse(file, strlen(file), &v, &n, err, sizeof(err)), 0, "%s",
                 err);
    mapper_set_extra_records(fx.m, v, n);
    msg = mapper_dns_update(fx.m, fx.s, 1);
    cr_assert_eq(json_array_size(records_of(msg)), 2);
    cr_expect_str_eq(hs_json_str(json_array_get(records_of(msg), 1), "Name"), "v6.example.com");
    cr_expect_str_eq(hs_json_str(json_array_get(records_of(msg), 1), "Value"), "fd7a::9");
    json_decref(msg);
    r = full(2);
    cr_expect_eq(json_array_size(records_of(r)), 2, "full maps carry them too");
    json_decref(r);

    mapper_set_extra_records(fx.m, NULL, 0);
    msg = mapper_dns_update(fx.m, fx.s, 1);
    cr_expect_null(records_of(msg), "an empty list in the file: none");
    json_decref(msg);
    cr_expect_null(mapper_dns_update(fx.m, fx.s, 99), "unknown node");
}

static const char *nextdns_addr(json_t *capmap, const char *addr)
{
    static char out[512];
    json_t *dns = json_pack("{s:[{s:s}]}", "Resolvers", "Addr", addr);

    mapper__nextdns(dns, state_node_by_id(fx.s, 1), capmap);
    snprintf(out, sizeof(out), "%s",
             hs_json_str(json_array_get(json_object_get(dns, "Resolvers"), 0), "Addr"));
    json_decref(dns);
    return out;
}

Test(mapper, dns_nextdns_per_node)
{
    json_t *caps = json_object();

    cr_expect_str_eq(nextdns_addr(caps, "https://dns.nextdns.io/abc?x=a+b&device_name=zz"),
                     "https://dns.nextdns.io/abc?device_ip=100.64.0.1&device_model=linux"
                     "&device_name=laptop&x=a+b");
    cr_expect_str_eq(nextdns_addr(caps, "https://dns.nextdns.io.evil.example/abc"),
                     "https://dns.nextdns.io.evil.example/abc", "not NextDNS");
    cr_expect_str_eq(nextdns_addr(caps, "1.1.1.1"), "1.1.1.1");
    json_object_set_new(caps, "nextdns:zz9", json_array());
    json_object_set_new(caps, "nextdns:abc", json_array());
    json_object_set_new(caps, "nextdns:bad/../x", json_array());
    cr_expect_str_eq(nextdns_addr(caps, "https://dns.nextdns.io/global"),
                     "https://dns.nextdns.io/abc?device_ip=100.64.0.1&device_model=linux"
                     "&device_name=laptop", "the first valid profile in byte order");
    json_object_set_new(caps, "nextdns:no-device-info", json_array());
    cr_expect_str_eq(nextdns_addr(caps, "https://dns.nextdns.io/global"),
                     "https://dns.nextdns.io/abc");
    json_decref(caps);
}

/* ---- deltas ---- */

Test(mapper, delta_shapes)
{
    const uint64_t changed[] = { 2, 1, 77 }, removed[] = { 9, 1 }, online[] = { 2, 3 };
    struct mapper_changes ch = { .changed = changed, .nchanged = 3, .removed = removed,
                                 .nremoved = 2, .online = online, .nonline = 2 };
    json_t *d = mapper_delta(fx.m, fx.s, 1, &ch, fx.now), *pc;

    cr_assert_not_null(d);
    pc = json_object_get(d, "PeersChanged");
    cr_expect_eq(json_array_size(pc), 1);
    cr_expect_str_eq(hs_json_str(by_id(pc, 2), "Name"), "server.example.com.");
    cr_expect(json_is_true(json_object_get(json_object_get(d, "Node"), "MachineAuthorized")),
              "self in `changed` comes back as Node");
    cr_expect_eq(json_array_size(json_object_get(d, "PeersRemoved")), 1);
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(d, "PeersRemoved"), 0)), 9);
    cr_expect(json_is_false(json_object_get(json_object_get(d, "OnlineChange"), "2")));
    cr_expect(json_is_true(json_object_get(json_object_get(d, "OnlineChange"), "3")));
    cr_expect(json_is_true(json_object_get(json_object_get(d, "PeerSeenChange"), "2")));
    cr_expect(json_is_false(json_object_get(json_object_get(d, "PeerSeenChange"), "3")));
    cr_expect_not_null(by_id(json_object_get(d, "UserProfiles"), (json_int_t)fx.bob));
    cr_expect_not_null(by_id(json_object_get(d, "UserProfiles"), (json_int_t)fx.alice));
    cr_expect_null(json_object_get(d, "Peers"), "a delta never replaces the peer list");
    cr_expect_null(json_object_get(d, "DERPMap"));
    json_decref(d);

    d = mapper_delta(fx.m, fx.s, 1, &(struct mapper_changes){ .removed = removed, .nremoved = 1 },
                     fx.now);
    cr_expect_eq(json_object_size(d), 1, "removals only: no UserProfiles");
    json_decref(d);
}

Test(mapper, empty_delta_is_null)
{
    const uint64_t unknown[] = { 77 }, self[] = { 1 };

    struct mapper_changes only_self = { .changed = unknown, .nchanged = 1, .patched = self,
                                        .npatched = 1, .removed = self, .nremoved = 1,
                                        .online = self, .nonline = 1 };

    cr_expect_null(mapper_delta(fx.m, fx.s, 1, &(struct mapper_changes){ 0 }, fx.now));
    cr_expect_null(mapper_delta(fx.m, fx.s, 1, &only_self, fx.now));
}

Test(mapper, patch_carries_only_moving_fields)
{
    const uint64_t patched[] = { 2 };
    struct mapper_changes ch = { .patched = patched, .npatched = 1 };
    json_t *d = mapper_delta(fx.m, fx.s, 1, &ch, fx.now), *pc;
    char *text;

    cr_assert_not_null(d);
    pc = json_array_get(json_object_get(d, "PeersChangedPatch"), 0);
    cr_assert_not_null(pc);
    cr_expect_eq(json_integer_value(json_object_get(pc, "NodeID")), 2);
    cr_expect(json_is_array(json_object_get(pc, "Endpoints")));
    cr_expect(hs_has_prefix(hs_json_str(pc, "Key"), "nodekey:"));
    cr_expect_null(json_object_get(pc, "Hostinfo"));
    cr_expect_null(json_object_get(d, "PeersChanged"));
    cr_expect_null(json_object_get(d, "UserProfiles"), "a patch names no new user");
    text = json_dumps(d, JSON_COMPACT);
    cr_expect_leq(strlen(text), 400, "patch is small: %zu bytes", strlen(text));
    free(text);
    json_decref(d);

    /* Only the endpoints moved: the patch says just that. */
    const unsigned fields[] = { STATE_F_ENDPOINTS };
    ch.patched_fields = fields;
    d = mapper_delta(fx.m, fx.s, 1, &ch, fx.now);
    pc = json_array_get(json_object_get(d, "PeersChangedPatch"), 0);
    cr_expect(json_is_array(json_object_get(pc, "Endpoints")));
    cr_expect_null(json_object_get(pc, "Key"));
    cr_expect_null(json_object_get(pc, "DiscoKey"));
    text = json_dumps(d, JSON_COMPACT);
    cr_expect_leq(strlen(text), 120, "endpoint patch: %zu bytes", strlen(text));
    free(text);
    json_decref(d);
}

Test(mapper, patch_carries_a_new_capability_version)
{
    /* Node 1 opened its session with capability version 106 (setup); node 2 never did. */
    const uint64_t patched[] = { 1, 2 };
    const unsigned fields[] = { STATE_F_CAP, STATE_F_CAP };
    struct mapper_changes ch = { .patched = patched, .npatched = 2, .patched_fields = fields };
    json_t *d = mapper_delta(fx.m, fx.s, 3, &ch, fx.now), *pcs, *pc;

    cr_assert_not_null(d);
    pcs = json_object_get(d, "PeersChangedPatch");
    cr_assert_eq(json_array_size(pcs), 2);
    pc = json_array_get(pcs, 0);
    cr_expect_eq(json_integer_value(json_object_get(pc, "NodeID")), 1);
    cr_expect_eq(json_integer_value(json_object_get(pc, "Cap")), 106);
    cr_expect_null(json_object_get(pc, "Endpoints"));
    cr_expect_null(json_object_get(pc, "Key"));
    pc = json_array_get(pcs, 1);
    cr_expect_eq(json_integer_value(json_object_get(pc, "NodeID")), 2);
    cr_expect_null(json_object_get(pc, "Cap"), "no version known: nothing said");
    json_decref(d);
}

Test(mapper, keepalive)
{
    json_t *k = mapper_keepalive();

    cr_expect(json_is_true(json_object_get(k, "KeepAlive")));
    cr_expect_eq(json_object_size(k), 1);
    json_decref(k);
}

/* ---- encoding ---- */

static uint32_t le32(const char *p)
{
    const uint8_t *b = (const uint8_t *)p;

    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* Decodes one zstd message at p (one frame or several); returns the JSON (malloc'd) and its
 * total wire size. */
static char *unzstd(const char *p, size_t avail, size_t *used)
{
    uint32_t n = le32(p);
    unsigned long long size;
    char *out;

    cr_assert_leq(4 + (size_t)n, avail);
    cr_expect_eq((uint8_t)p[4], 0x28, "zstd frame magic");
    size = 0;
    for (size_t off = 0; off < n;) { /* frames one after another: their sizes add up */
        size_t f = ZSTD_findFrameCompressedSize(p + 4 + off, n - off);
        unsigned long long c = ZSTD_getFrameContentSize(p + 4 + off, n - off);
        cr_assert(!ZSTD_isError(f));
        cr_assert(c != ZSTD_CONTENTSIZE_ERROR && c != ZSTD_CONTENTSIZE_UNKNOWN);
        size += c;
        off += f;
    }
    out = malloc(size + 1);
    cr_assert_eq(ZSTD_decompress(out, size, p + 4, n), size);
    out[size] = '\0';
    *used = 4 + n;
    return out;
}

Test(mapper, encode_raw_and_zstd)
{
    json_t *r = full(1);
    char *json = json_dumps(r, JSON_COMPACT), *back;
    struct hs_buf b;
    size_t used;

    hs_buf_init(&b, MAPPER_MAX_FRAME + 4);
    cr_assert_eq(mapper_encode(r, false, &b), 0);
    cr_expect_eq(le32(b.data), strlen(json));
    cr_expect_eq(b.len, 4 + strlen(json));
    cr_expect(memcmp(b.data + 4, json, strlen(json)) == 0);

    hs_buf_reset(&b);
    cr_assert_eq(mapper_encode(r, true, &b), 0);
    back = unzstd(b.data, b.len, &used);
    cr_expect_eq(used, b.len);
    cr_expect_str_eq(back, json);
    cr_expect_lt(b.len, strlen(json), "compressed");
    free(back);

    /* Messages append: a keep-alive after the map. */
    json_t *k = mapper_keepalive();
    size_t first = b.len;
    cr_assert_eq(mapper_encode(k, true, &b), 0);
    back = unzstd(b.data + first, b.len - first, &used);
    cr_expect_str_eq(back, "{\"KeepAlive\":true}");
    free(back);
    json_decref(k);

    hs_buf_free(&b);
    free(json);
    json_decref(r);
}

Test(mapper, encode_respects_the_buffer_cap)
{
    json_t *r = full(1);
    struct hs_buf b;

    hs_buf_init(&b, 64);
    cr_expect_eq(mapper_encode(r, false, &b), -E2BIG);
    cr_expect_eq(mapper_encode(r, true, &b), -E2BIG);
    cr_expect_eq(b.len, 0, "nothing half-written");
    hs_buf_free(&b);
    json_decref(r);
}

static void *encode_many(void *arg)
{
    const json_t *r = arg;
    char *json = json_dumps(r, JSON_COMPACT);
    bool ok = true;

    for (int i = 0; i < 50 && ok; i++) {
        struct hs_buf b;
        size_t used;
        char *back;

        hs_buf_init(&b, MAPPER_MAX_FRAME + 4);
        ok = mapper_encode(r, true, &b) == 0;
        back = ok ? unzstd(b.data, b.len, &used) : NULL;
        ok = ok && strcmp(back, json) == 0;
        free(back);
        hs_buf_free(&b);
    }
    free(json);
    return ok ? arg : NULL;
}

Test(mapper, encode_from_many_threads)
{
    json_t *r = full(1);
    pthread_t t[4];
    void *ret;

    for (size_t i = 0; i < HS_ARRAY_LEN(t); i++)
        cr_assert_eq(pthread_create(&t[i], NULL, encode_many, r), 0);
    for (size_t i = 0; i < HS_ARRAY_LEN(t); i++) {
        pthread_join(t[i], &ret);
        cr_expect_eq(ret, r);
    }
    json_decref(r);
}

/* ---- full maps for zstd clients: cached runs of peers ---- */

#define R 16                /* tuning.map_peer_run in these tests */
#define LAST (2 * R + 22) /* three runs, the last a short one */

/* Nodes 5..last join (state indexes 4..last-1), as new rows the state reloads. */
static void add_nodes(int last)
{
    sqlite3 *db;

    cr_assert_eq(sqlite3_open(fx.path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    for (int id = 5; id <= last; id++) {
        char name[16];
        snprintf(name, sizeof(name), "n%d", id);
        insert_node(db, &(struct node_row){ id, name, id % 2 ? fx.alice : fx.bob, NULL, true,
                                           "{\"OS\":\"linux\"}", NULL, 0, 0 });
    }
    sqlite3_close(db);
    state_unlock(fx.s);
    for (int id = 5; id <= last; id++)
        state_refresh_node(fx.s, (uint64_t)id);
    state_rdlock(fx.s);
}

static size_t count_frames(const char *z, size_t len)
{
    size_t n = 0;

    while (len > 0) {
        size_t f = ZSTD_findFrameCompressedSize(z, len);
        cr_assert(!ZSTD_isError(f));
        z += f;
        len -= f;
        n++;
    }
    return n;
}

/* Whether the zstd full map for self decodes, whole, to exactly the text one; its frame
 * count in *frames. Usable from any thread (no assertions of its own but unzstd's). */
static bool zstd_is_text(uint64_t self, size_t *frames)
{
    struct hs_buf text, enc;
    size_t used;
    char *back = NULL;
    bool ok;

    hs_buf_init(&text, MAPPER_MAX_FRAME);
    hs_buf_init(&enc, MAPPER_MAX_FRAME + 4);
    ok = mapper_full_text(fx.m, fx.s, self, fx.now, NULL, &text, NULL) == 0 &&
         mapper_full_encoded(fx.m, fx.s, self, fx.now, NULL, true, &enc, NULL) == 0;
    if (ok) {
        back = unzstd(enc.data, enc.len, &used);
        ok = used == enc.len && strcmp(back, text.data) == 0;
        *frames = count_frames(enc.data + 4, enc.len - 4);
    }
    free(back);
    hs_buf_free(&text);
    hs_buf_free(&enc);
    return ok;
}

static size_t expect_zstd_is_text(uint64_t self)
{
    size_t frames = 0;

    cr_expect(zstd_is_text(self, &frames), "self %llu: the zstd map is not the text map",
              (unsigned long long)self);
    return frames;
}

Test(mapper, zstd_full_map_from_cached_runs)
{
    const uint64_t selves[] = { 1, 4, R, R + 1, R + 2, R + R / 2, 2 * R, 2 * R + 1, LAST };

    add_nodes(LAST); /* ids 1..LAST: runs [0,R) [R,2R) [2R,LAST) */
    for (size_t i = 0; i < HS_ARRAY_LEN(selves); i++)
        cr_expect_geq(expect_zstd_is_text(selves[i]), 3, "cached runs are frames of their own");
    for (size_t i = 0; i < HS_ARRAY_LEN(selves); i++) /* again, from the cache */
        expect_zstd_is_text(selves[i]);
    /* The viewer's own run is made of cached spans (R / 8 = 2 nodes each), all but its own:
     * with the other two runs, far more frames than the three whole runs would give. */
    cr_expect_geq(expect_zstd_is_text(R + R / 2), 2 + R / 2 - 1, "own run not cut into spans");
    /* Not raw JSON: only zstd maps are cut into runs. */
    struct hs_buf raw, text;
    hs_buf_init(&raw, MAPPER_MAX_FRAME + 4);
    hs_buf_init(&text, MAPPER_MAX_FRAME);
    cr_assert_eq(mapper_full_encoded(fx.m, fx.s, 7, fx.now, NULL, false, &raw, NULL), 0);
    cr_assert_eq(mapper_full_text(fx.m, fx.s, 7, fx.now, NULL, &text, NULL), 0);
    cr_expect_eq(raw.len, 4 + text.len);
    cr_expect(memcmp(raw.data + 4, text.data, text.len) == 0);
    hs_buf_free(&raw);
    hs_buf_free(&text);
    cr_expect_eq(mapper_full_encoded(fx.m, fx.s, 9999, fx.now, NULL, true, &raw, NULL), -ENOENT);
}

Test(mapper, zstd_runs_follow_changes)
{
    sqlite3 *db;

    add_nodes(LAST);
    expect_zstd_is_text(1);
    /* A node in the second run goes online: its run is rebuilt. */
    state_unlock(fx.s);
    state_node_session(fx.s, R + 5, true, 0);
    state_rdlock(fx.s);
    expect_zstd_is_text(1);
    expect_zstd_is_text(LAST);
    /* A node of the first run is deleted: every later run shifts by one. */
    cr_assert_eq(sqlite3_open(fx.path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "DELETE FROM nodes WHERE id = 10", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    state_unlock(fx.s);
    state_refresh_node(fx.s, 10);
    state_rdlock(fx.s);
    cr_assert_null(state_node_by_id(fx.s, 10));
    expect_zstd_is_text(1);
    expect_zstd_is_text(R + 2);
    expect_zstd_is_text(LAST);
}

/* The viewer alone in the last run: nothing of that run goes out. */
Test(mapper, zstd_viewer_alone_in_a_run)
{
    add_nodes(2 * R + 1);
    expect_zstd_is_text(2 * R + 1);
    expect_zstd_is_text(1);
}

static void *full_maps_many(void *arg)
{
    uint64_t first = (uint64_t)(uintptr_t)arg;
    size_t frames;
    bool ok = true;

    for (uint64_t self = first; self <= LAST && ok; self += 23)
        ok = zstd_is_text(self, &frames);
    return ok ? arg : NULL;
}

Test(mapper, zstd_full_maps_from_many_threads)
{
    pthread_t t[4];
    void *ret;

    add_nodes(LAST);
    /* The caller's read lock (setup) covers the threads too: the state cannot change. */
    for (size_t i = 0; i < HS_ARRAY_LEN(t); i++)
        cr_assert_eq(pthread_create(&t[i], NULL, full_maps_many, (void *)(uintptr_t)(i + 1)), 0);
    for (size_t i = 0; i < HS_ARRAY_LEN(t); i++) {
        pthread_join(t[i], &ret);
        cr_expect_eq(ret, (void *)(uintptr_t)(i + 1));
    }
}

/* ---- the compiled policy in maps and deltas ----
 * Fixture: alice owns 1 (laptop) and 3 (tagged tag:srv, so not in alice's alias), bob owns 2,
 * carol owns 4. These need the real compiler (core/policy), not an allow-all stub. */

/* alice's devices may reach tag:srv on port 22; no one else reaches anything. */
#define POLICY_SRV                                                                           \
    "{\"tagOwners\": {\"tag:srv\": [\"alice@\"]},"                                           \
    " \"acls\": [{\"action\": \"accept\", \"src\": [\"alice@\"], \"dst\": [\"tag:srv:22\"]}]," \
    " \"ssh\": [{\"action\": \"accept\", \"src\": [\"alice@\"], \"dst\": [\"tag:srv\"],"     \
    "            \"users\": [\"root\"]}],"                                                   \
    " \"nodeAttrs\": [{\"target\": [\"alice@\"], \"attr\": [\"custom:laptop\"]}]}"
/* alice's devices may reach bob's on any port. */
#define POLICY_BOB                                                                           \
    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"alice@\"], \"dst\": [\"bob@:*\"]}]}"

/* Puts text in force through the state (a policy file), outside the fixture's read lock. */
static int set_policy(const char *text, char *err, size_t errsize)
{
    char path[160];
    FILE *f;
    int rc;

    snprintf(path, sizeof(path), "%s/policy.hujson", fx.dir);
    cr_assert_not_null(f = fopen(path, "w"));
    fputs(text, f);
    fclose(f);
    state_unlock(fx.s);
    state_policy_source(fx.s, STATE_POLICY_FILE, path);
    rc = state_policy_reload(fx.s, err, errsize);
    state_rdlock(fx.s);
    return rc;
}

static void expect_policy(const char *text)
{
    char err[512] = "";

    cr_assert_eq(set_policy(text, err, sizeof(err)), 0, "%s", err);
}

/* The peer ids of a full map, ascending, as "a,b,c". */
static void peer_ids(const json_t *resp, char *out, size_t size)
{
    json_t *peers = json_object_get(resp, "Peers"), *p;
    size_t i, o = 0;

    cr_assert(json_is_array(peers), "Peers is always there, empty or not");
    out[0] = '\0';
    json_array_foreach(peers, i, p)
        o += (size_t)snprintf(out + o, size - o, "%s%lld", i ? "," : "",
                              (long long)json_integer_value(json_object_get(p, "ID")));
}

static void expect_peers(uint64_t self, const char *want)
{
    json_t *r = full(self);
    char got[256];

    peer_ids(r, got, sizeof(got));
    cr_expect_str_eq(got, want, "node %llu sees %s, not %s", (unsigned long long)self, want, got);
    json_decref(r);
}

/* Whether some SrcIPs entry of the filter starts with ip. */
static bool filter_from(const json_t *filter, const char *ip)
{
    size_t i, j;
    json_t *rule, *src;

    json_array_foreach(filter, i, rule) {
        json_array_foreach(json_object_get(rule, "SrcIPs"), j, src) {
            if (json_is_string(src) && hs_has_prefix(json_string_value(src), ip))
                return true;
        }
    }
    return false;
}

Test(mapper, policy_filters_peers)
{
    expect_policy(POLICY_SRV);
    expect_peers(1, "3");
    expect_peers(3, "1"); /* seeing is symmetric: 3 may be reached by 1 */
    expect_peers(2, "");
    expect_peers(4, "");
    /* The zstd map is built from runs too: the same text. */
    for (uint64_t self = 1; self <= 4; self++)
        expect_zstd_is_text(self);
}

Test(mapper, policy_packet_filter_from_the_net)
{
    json_t *r, *pf, *rule;

    expect_policy(POLICY_SRV);
    r = full(3);
    pf = json_object_get(r, "PacketFilter");
    cr_assert(json_is_array(pf) && json_array_size(pf) > 0, "tag:srv takes port 22 from alice");
    cr_expect(filter_from(pf, "100.64.0.1"), "from alice's laptop");
    cr_expect_not(filter_from(pf, "100.64.0.2"), "not from bob's server");
    rule = json_array_get(pf, 0);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(json_array_get(
                     json_object_get(rule, "DstPorts"), 0), "Ports"), "First")), 22);
    json_decref(r);

    r = full(1);
    pf = json_object_get(r, "PacketFilter");
    cr_expect(json_is_array(pf) && json_array_size(pf) == 0,
              "no one may reach the laptop: an empty filter (blocks all), not a missing one");
    json_decref(r);
}

Test(mapper, policy_ssh_and_capmap)
{
    json_t *r, *ssh, *caps;

    expect_policy(POLICY_SRV);
    r = full(3);
    ssh = json_object_get(r, "SSHPolicy");
    cr_assert(json_is_object(ssh), "tag:srv takes SSH from alice");
    cr_expect(json_array_size(json_object_get(ssh, "rules")) > 0);
    json_decref(r);

    r = full(1);
    cr_expect_null(json_object_get(r, "SSHPolicy"), "no rules: no SSHPolicy in a full map");
    caps = json_object_get(json_object_get(r, "Node"), "CapMap");
    cr_expect_not_null(json_object_get(caps, "custom:laptop"), "nodeAttrs for alice's laptop");
    cr_expect_not_null(json_object_get(caps, "https://tailscale.com/cap/file-sharing"),
                       "the config's capabilities stay");
    json_decref(r);
    r = full(2);
    cr_expect_null(json_object_get(json_object_get(json_object_get(r, "Node"), "CapMap"),
                                   "custom:laptop"));
    json_decref(r);
}

Test(mapper, policy_user_profiles_only_of_peers)
{
    json_t *r, *ups;

    expect_policy(POLICY_SRV);
    r = full(1);
    ups = json_object_get(r, "UserProfiles");
    cr_expect_not_null(by_id(ups, (json_int_t)fx.alice), "its own user");
    cr_expect_not_null(by_id(ups, TAGGED_USER), "its peer's (tagged)");
    cr_expect_null(by_id(ups, (json_int_t)fx.bob), "bob's node is not its peer");
    cr_expect_null(by_id(ups, (json_int_t)fx.carol));
    json_decref(r);
}

/* What a full map told node self (its net referenced: state_net_unref when done). */
static struct mapper_policy_state told_by_full_map(uint64_t self)
{
    struct mapper_policy_state told = { 0 };
    struct hs_buf text;

    hs_buf_init(&text, MAPPER_MAX_FRAME);
    cr_assert_eq(mapper_full_text(fx.m, fx.s, self, fx.now, NULL, &text, &told), 0);
    cr_assert_not_null(told.net);
    state_net_ref(told.net);
    hs_buf_free(&text);
    return told;
}

static void ids_text(const struct mapper_ids *l, char *out, size_t size)
{
    size_t o = 0;

    out[0] = '\0';
    for (size_t i = 0; i < l->n; i++)
        o += (size_t)snprintf(out + o, size - o, "%s%llu", i ? "," : "",
                              (unsigned long long)l->v[i]);
}

static void expect_plan(uint64_t self, const struct mapper_changes *ch,
                        const struct mapper_policy_state *was, const char *changed,
                        const char *removed, bool filter)
{
    struct mapper_plan p;
    char got[128];

    cr_assert_eq(mapper_plan(fx.m, fx.s, self, ch, was, NULL, &p), 0);
    ids_text(&p.changed, got, sizeof(got));
    cr_expect_str_eq(got, changed, "node %llu: appeared %s, want %s", (unsigned long long)self,
                     got, changed);
    ids_text(&p.removed, got, sizeof(got));
    cr_expect_str_eq(got, removed, "node %llu: vanished %s, want %s", (unsigned long long)self,
                     got, removed);
    cr_expect_eq(p.filter != NULL, filter, "node %llu: filter %s", (unsigned long long)self,
                 p.filter ? p.filter : "unchanged");
    if (!*changed && !*removed && !filter)
        cr_expect(mapper_plan_empty(&p), "node %llu: nothing changed, nothing to send",
                  (unsigned long long)self);
    mapper_plan_free(&p);
}

Test(mapper, policy_change_plans_deltas)
{
    struct mapper_policy_state t1, t2, t3, t4, again;
    struct mapper_changes none = { 0 };
    struct mapper_plan p;
    json_t *d, *pf;

    expect_policy(POLICY_SRV);
    t1 = told_by_full_map(1);
    t2 = told_by_full_map(2);
    t3 = told_by_full_map(3);
    t4 = told_by_full_map(4);
    expect_policy(POLICY_BOB);
    expect_plan(1, &none, &t1, "2", "3", false); /* nothing reaches 1 in either */
    expect_plan(2, &none, &t2, "1", "", true);   /* alice may reach it now */
    expect_plan(3, &none, &t3, "", "1", true);   /* port 22 from alice is gone */
    expect_plan(4, &none, &t4, "", "", false);   /* no change for carol: nothing */

    /* The deltas themselves: a new peer whole, a vanished one by id, the new filter. */
    cr_assert_eq(mapper_plan(fx.m, fx.s, 2, &none, &t2, NULL, &p), 0);
    cr_expect_eq(p.told.net, state_net_current(fx.s));
    d = mapper_plan_delta(fx.m, fx.s, 2, &p, fx.now);
    cr_assert_not_null(d);
    cr_expect_not_null(by_id(json_object_get(d, "PeersChanged"), 1));
    cr_expect(filter_from(json_object_get(d, "PacketFilter"), "100.64.0.1"));
    cr_expect_not_null(by_id(json_object_get(d, "UserProfiles"), (json_int_t)fx.alice));
    json_decref(d);
    mapper_plan_free(&p);
    cr_assert_eq(mapper_plan(fx.m, fx.s, 3, &none, &t3, NULL, &p), 0);
    d = mapper_plan_delta(fx.m, fx.s, 3, &p, fx.now);
    cr_assert_not_null(d);
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(d, "PeersRemoved"), 0)), 1);
    pf = json_object_get(d, "PacketFilter");
    cr_expect(json_is_array(pf) && json_array_size(pf) == 0, "an empty filter is sent, not left out");
    cr_expect(json_is_array(json_object_get(json_object_get(d, "SSHPolicy"), "rules")),
              "the SSH rules are dropped with an empty list");
    json_decref(d);
    mapper_plan_free(&p);

    /* Told the new policy, a node's plan is empty again. */
    cr_assert_eq(mapper_plan(fx.m, fx.s, 1, &none, &t1, NULL, &p), 0);
    cr_expect(p.node, "its CapMap lost custom:laptop: its own Node goes out");
    cr_expect_not(mapper_plan_shareable(&p));
    again = p.told;
    mapper_plan_free(&p);
    expect_plan(1, &none, &again, "", "", false);
    state_net_unref(t1.net);
    state_net_unref(t2.net);
    state_net_unref(t3.net);
    state_net_unref(t4.net);
}

Test(mapper, policy_batch_lists_kept_to_peers_seen)
{
    const uint64_t patched[] = { 2, 3 }, online[] = { 2, 3, 4 };
    struct mapper_changes ch = { .patched = patched, .npatched = 2, .online = online,
                                 .nonline = 3 };
    struct mapper_policy_state t1;
    json_t *d;

    expect_policy(POLICY_SRV);
    t1 = told_by_full_map(1);
    d = mapper_delta(fx.m, fx.s, 1, &ch, fx.now);
    cr_assert_not_null(d);
    cr_expect_eq(json_array_size(json_object_get(d, "PeersChangedPatch")), 1);
    cr_expect_eq(json_object_size(json_object_get(d, "OnlineChange")), 1);
    cr_expect_not_null(json_object_get(json_object_get(d, "OnlineChange"), "3"));
    json_decref(d);
    cr_expect_null(mapper_delta(fx.m, fx.s, 4, &ch, fx.now), "carol sees none of them");
    state_net_unref(t1.net);
}

Test(mapper, policy_node_added_and_removed_only_to_viewers)
{
    struct mapper_policy_state t1, t2, t3, n1, n2, n3;
    const uint64_t five[] = { 5 };
    struct mapper_changes added = { .changed = five, .nchanged = 1 };
    struct mapper_changes removed = { .removed = five, .nremoved = 1 };
    struct mapper_plan p;
    sqlite3 *db;

    expect_policy(POLICY_SRV);
    t1 = told_by_full_map(1);
    t2 = told_by_full_map(2);
    t3 = told_by_full_map(3);
    add_nodes(5); /* alice's: it reaches tag:srv */
    expect_plan(3, &added, &t3, "5", "", true); /* and may now reach 3's port 22 */
    expect_plan(1, &added, &t1, "", "", false);
    expect_plan(2, &added, &t2, "", "", false);
    expect_peers(5, "3");

    n1 = told_by_full_map(1);
    n2 = told_by_full_map(2);
    n3 = told_by_full_map(3);
    cr_assert_eq(sqlite3_open(fx.path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "DELETE FROM nodes WHERE id = 5", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    state_unlock(fx.s);
    state_refresh_node(fx.s, 5);
    state_rdlock(fx.s);
    expect_plan(3, &removed, &n3, "", "5", true);
    expect_plan(1, &removed, &n1, "", "", false);
    expect_plan(2, &removed, &n2, "", "", false);
    /* Not knowing what it was told (its first map is on the way): told of the removal. */
    cr_assert_eq(mapper_plan(fx.m, fx.s, 2, &removed, NULL, NULL, &p), 0);
    cr_expect_eq(p.removed.n, 1);
    mapper_plan_free(&p);
    state_net_unref(t1.net);
    state_net_unref(t2.net);
    state_net_unref(t3.net);
    state_net_unref(n1.net);
    state_net_unref(n2.net);
    state_net_unref(n3.net);
}

/* IP rules over nodes 1..LAST (100.64.0.<id>): everyone may reach 1..31 (two whole runs),
 * and 40 may reach 45. Viewers see whole runs, parts of runs, or nothing: the zstd map,
 * cached runs where it can, must still be exactly the text one. */
#define POLICY_RUNS                                                                          \
    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"100.64.0.0/27:*\"]},"  \
    "           {\"action\": \"accept\", \"src\": [\"100.64.0.40\"],"                        \
    "            \"dst\": [\"100.64.0.45:*\"]}]}"

Test(mapper, policy_zstd_runs_partly_seen)
{
    const uint64_t selves[] = { 1, 2, 17, 31, 32, 33, 40, 45, 46, LAST };
    json_t *r;

    add_nodes(LAST);
    expect_policy(POLICY_RUNS);
    for (size_t i = 0; i < HS_ARRAY_LEN(selves); i++)
        expect_zstd_is_text(selves[i]);
    r = full(46);
    cr_expect_eq(json_array_size(json_object_get(r, "Peers")), 31, "1..31 only");
    json_decref(r);
    r = full(1);
    cr_expect_eq(json_array_size(json_object_get(r, "Peers")), LAST - 1, "reached by all");
    json_decref(r);
}

/* alice's devices (some 27 once add_nodes ran: SrcIPs well past POLICY_PART_MIN) may reach
 * bob's: every bob node's filter carries the same long source list, by reference. */
#define POLICY_SHARED_ANY                                                                    \
    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"alice@\"], \"dst\": [\"bob@:*\"]}]}"
#define POLICY_SHARED_SSH                                                                    \
    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"alice@\"], \"dst\": [\"bob@:22\"]}]}"
#define POLICY_SHARED_MORE                                                                   \
    "{\"acls\": [{\"action\": \"accept\","                                                   \
    "             \"src\": [\"alice@\", \"Carol@Example.com\"], \"dst\": [\"bob@:22\"]}]}"

/* The plan's delta for self: its zstd message decodes to its plain one; that text parsed
 * (caller decrefs). */
static json_t *delta_both_ways(uint64_t self, const struct mapper_plan *p)
{
    struct hs_buf plain, z;
    size_t used;
    char *back;
    json_t *d;

    hs_buf_init(&plain, MAPPER_MAX_FRAME + 8);
    hs_buf_init(&z, MAPPER_MAX_FRAME + 8);
    cr_assert_eq(mapper_plan_encoded(fx.m, fx.s, self, p, fx.now, false, &plain), 0);
    cr_assert_eq(mapper_plan_encoded(fx.m, fx.s, self, p, fx.now, true, &z), 0);
    cr_assert_eq(le32(plain.data), plain.len - 4);
    back = unzstd(z.data, z.len, &used);
    cr_expect_eq(used, z.len);
    cr_expect(strlen(back) == plain.len - 4 && memcmp(back, plain.data + 4, plain.len - 4) == 0,
              "node %llu: the zstd delta is not the plain one", (unsigned long long)self);
    cr_expect_gt(count_frames(z.data + 4, z.len - 4), 1, "the sources went as a frame apart");
    d = json_loadb(plain.data + 4, plain.len - 4, 0, NULL);
    cr_assert_not_null(d, "the delta is JSON");
    free(back);
    hs_buf_free(&plain);
    hs_buf_free(&z);
    return d;
}

/* The filter a full map for self carries now (caller decrefs). */
static json_t *full_filter(uint64_t self)
{
    json_t *r = full(self), *pf = json_incref(json_object_get(r, "PacketFilter"));

    json_decref(r);
    return pf;
}

Test(mapper, policy_shared_sources_by_reference)
{
    struct mapper_changes none = { 0 };
    struct mapper_policy_state t;
    struct mapper_plan p;
    json_t *d, *pf;

    add_nodes(LAST);
    expect_policy(POLICY_SHARED_ANY);
    for (uint64_t self = 6; self <= LAST; self += 6) /* bob's nodes (node 2 has expired) */
        cr_expect_gt(expect_zstd_is_text(self), 1);
    /* What a full map told about the filter is what a plan finds: nothing to resend. */
    t = told_by_full_map(6);
    cr_assert_eq(mapper_plan(fx.m, fx.s, 6, &none, &t, NULL, &p), 0);
    cr_expect_null(p.filter, "same net, same filter: no resend");
    mapper_plan_free(&p);
    /* The same sources before other ports: a new filter, its parts spliced back in order. */
    expect_policy(POLICY_SHARED_SSH);
    cr_assert_eq(mapper_plan(fx.m, fx.s, 6, &none, &t, NULL, &p), 0);
    cr_assert_not_null(p.filter);
    cr_expect_gt(p.filter_parts.n, 0, "alice's sources are held by reference");
    d = delta_both_ways(6, &p);
    pf = full_filter(6);
    cr_expect(json_equal(json_object_get(d, "PacketFilter"), pf), "the delta's filter is the map's");
    json_decref(pf);
    json_decref(d);
    state_net_unref(t.net);
    t = p.told;
    state_net_ref(t.net);
    mapper_plan_free(&p);
    /* Only the shared text changes (carol's node joins the sources): a new filter too. */
    expect_policy(POLICY_SHARED_MORE);
    cr_assert_eq(mapper_plan(fx.m, fx.s, 6, &none, &t, NULL, &p), 0);
    cr_expect_not_null(p.filter, "a changed source list is a changed filter");
    d = delta_both_ways(6, &p);
    cr_expect(filter_from(json_object_get(d, "PacketFilter"), "100.64.0.4"), "carol's node");
    json_decref(d);
    mapper_plan_free(&p);
    state_net_unref(t.net);
}

/* ---- routes: primaries, failover, views ---- */

#define HA_ROUTE "10.9.0.0/24"

struct recorded {
    uint64_t changed[32];
    size_t n;
};

static void record_changes(void *arg, const struct state_change *ch)
{
    struct recorded *r = arg;

    if (ch->kind == STATE_NODE_CHANGED && r->n < HS_ARRAY_LEN(r->changed))
        r->changed[r->n++] = ch->id;
}

static bool recorded_has(const struct recorded *r, uint64_t id)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->changed[i] == id)
            return true;
    return false;
}

/* Bob's routers 5 and 6 announce and have HA_ROUTE approved; neither is online yet. */
static void add_ha_routers(void)
{
    const struct node_row rows[] = {
        { 5, "router-a", fx.bob, NULL, true, "{\"RoutableIPs\":[\"" HA_ROUTE "\"]}",
          "[\"" HA_ROUTE "\"]", 0, 0 },
        { 6, "router-b", fx.bob, NULL, true, "{\"RoutableIPs\":[\"" HA_ROUTE "\"]}",
          "[\"" HA_ROUTE "\"]", 0, 0 },
    };
    sqlite3 *db;

    cr_assert_eq(sqlite3_open(fx.path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    for (size_t i = 0; i < HS_ARRAY_LEN(rows); i++)
        insert_node(db, &rows[i]);
    sqlite3_close(db);
    state_unlock(fx.s);
    state_refresh_node(fx.s, 5);
    state_refresh_node(fx.s, 6);
    state_rdlock(fx.s);
}

static void set_online(uint64_t id, bool on)
{
    state_unlock(fx.s);
    state_node_session(fx.s, id, on, 106);
    state_rdlock(fx.s);
}

/* Whether viewer's full map gives peer the route, in AllowedIPs and PrimaryRoutes alike. */
static bool peer_has_route(uint64_t viewer, json_int_t peer, const char *route)
{
    json_t *r = full(viewer), *p = by_id(json_object_get(r, "Peers"), peer);
    bool allowed, primary;

    cr_assert_not_null(p, "node %llu sees %lld", (unsigned long long)viewer, (long long)peer);
    allowed = has_str(json_object_get(p, "AllowedIPs"), route);
    primary = has_str(json_object_get(p, "PrimaryRoutes"), route);
    cr_expect_eq(allowed, primary, "AllowedIPs and PrimaryRoutes agree on %s", route);
    json_decref(r);
    expect_zstd_is_text(viewer);
    return allowed;
}

Test(mapper, routes_offline_router_serves_nothing)
{
    add_ha_routers();
    cr_expect_eq(state_route_primary(fx.s, HA_ROUTE), 0, "no router online");
    cr_expect_not(peer_has_route(1, 5, HA_ROUTE));
    cr_expect_not(peer_has_route(1, 6, HA_ROUTE));
    /* The laptop's own approved routes: served, and primary for 10.0.0.0/24 (online). */
    cr_expect_eq(state_route_primary(fx.s, "10.0.0.0/24"), 1);
    cr_expect_eq(state_route_primary(fx.s, "192.168.0.0/24"), 0, "approved, not announced");
    cr_expect(peer_has_route(3, 1, "10.0.0.0/24"));
}

Test(mapper, routes_failover_and_no_flap)
{
    struct recorded rec = { 0 };

    add_ha_routers();
    state_listen(fx.s, record_changes, &rec);
    set_online(6, true);
    cr_expect_eq(state_route_primary(fx.s, HA_ROUTE), 6, "the only online router");
    set_online(5, true);
    cr_expect_eq(state_route_primary(fx.s, HA_ROUTE), 6, "a lower id does not take it over");
    cr_expect(peer_has_route(1, 6, HA_ROUTE));
    cr_expect_not(peer_has_route(1, 5, HA_ROUTE), "the standby is not given to peers");
    cr_expect(peer_has_route(5, 6, HA_ROUTE), "the standby hears who the primary is");

    rec.n = 0;
    set_online(6, false); /* the primary goes: failover */
    cr_expect_eq(state_route_primary(fx.s, HA_ROUTE), 5);
    cr_expect(recorded_has(&rec, 5) && recorded_has(&rec, 6),
              "both routers reported changed, so every peer gets a delta");
    cr_expect(peer_has_route(1, 5, HA_ROUTE));
    cr_expect_not(peer_has_route(1, 6, HA_ROUTE));

    rec.n = 0;
    set_online(6, true); /* back: no flap */
    cr_expect_eq(state_route_primary(fx.s, HA_ROUTE), 5);
    cr_expect_eq(rec.n, 0, "nothing moved");
    cr_expect(peer_has_route(1, 5, HA_ROUTE));
}

Test(mapper, routes_failover_delta_carries_new_allowed_ips)
{
    uint64_t ids[] = { 5, 6 };
    struct mapper_changes ch = { .changed = ids, .nchanged = 2 };
    json_t *d, *p5, *p6;

    add_ha_routers();
    set_online(5, true);
    set_online(6, true);
    set_online(5, false);
    d = mapper_delta(fx.m, fx.s, 1, &ch, fx.now);
    cr_assert_not_null(d);
    p5 = by_id(json_object_get(d, "PeersChanged"), 5);
    p6 = by_id(json_object_get(d, "PeersChanged"), 6);
    cr_assert(p5 && p6);
    cr_expect_not(has_str(json_object_get(p5, "AllowedIPs"), HA_ROUTE));
    cr_expect(has_str(json_object_get(p6, "AllowedIPs"), HA_ROUTE));
    cr_expect(has_str(json_object_get(p6, "PrimaryRoutes"), HA_ROUTE));
    json_decref(d);
}

/* Members see each other; only alice's devices may reach the routed subnet. */
#define POLICY_ROUTE_ALICE                                                                   \
    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"autogroup:member\"],"                  \
    "            \"dst\": [\"autogroup:member:*\"]},"                                        \
    "           {\"action\": \"accept\", \"src\": [\"alice@\"], \"dst\": [\"" HA_ROUTE ":*\"]}]}"

Test(mapper, routes_given_only_to_viewers_the_policy_lets_reach_them)
{
    uint64_t ids[] = { 5 };
    struct mapper_changes ch = { .changed = ids, .nchanged = 1 };
    struct mapper_plan p1, p4, p6;

    add_ha_routers();
    set_online(5, true);
    expect_policy(POLICY_ROUTE_ALICE);
    cr_expect(peer_has_route(1, 5, HA_ROUTE), "alice's laptop may reach it");
    cr_expect_not(peer_has_route(4, 5, HA_ROUTE), "carol's phone sees the router, not the route");
    cr_expect_not_null(state_node_by_id(fx.s, 5)->peer_json_bare,
                       "the router without its routes is cached for viewers like carol");
    cr_expect(peer_has_route(6, 5, HA_ROUTE), "the standby router");
    /* The cached peer JSON is the default view; carol's map is built apart and the cache
     * stays as it was. */
    cr_expect(peer_has_route(1, 5, HA_ROUTE));

    /* Viewers who get different routes from a router do not share its delta. */
    cr_assert_eq(mapper_plan(fx.m, fx.s, 1, &ch, NULL, NULL, &p1), 0);
    cr_assert_eq(mapper_plan(fx.m, fx.s, 4, &ch, NULL, NULL, &p4), 0);
    cr_assert_eq(mapper_plan(fx.m, fx.s, 6, &ch, NULL, NULL, &p6), 0);
    cr_expect_not(mapper_plan_same(&p1, &p4));
    cr_expect_eq(mapper_plan_hash(&p1), mapper_plan_hash(&p6), "both get the route");
    mapper_plan_free(&p1);
    mapper_plan_free(&p4);
    mapper_plan_free(&p6);
}

Test(mapper, routes_policy_change_tells_viewers_of_routes_that_moved)
{
    struct mapper_policy_state was = { 0 };
    struct mapper_changes none = { 0 };
    struct mapper_plan p;
    struct hs_buf text;

    add_ha_routers();
    set_online(5, true);
    expect_policy(POLICY_ROUTE_ALICE);
    /* What carol's phone was told: the current net, without the route. */
    hs_buf_init(&text, MAPPER_MAX_FRAME);
    cr_assert_eq(mapper_full_text(fx.m, fx.s, 4, fx.now, NULL, &text, &was), 0);
    hs_buf_free(&text);
    state_net_ref(was.net);
    expect_policy("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}");
    cr_assert_eq(mapper_plan(fx.m, fx.s, 4, &none, &was, NULL, &p), 0);
    /* Carol saw router 5 before and after: only its routes changed for her. The standby
     * (no route for her either way) and bob's server (nothing changed) stay out. */
    {
        bool has5 = false, has6 = false, has2 = false;
        for (size_t i = 0; i < p.changed.n; i++) {
            has5 |= p.changed.v[i] == 5;
            has6 |= p.changed.v[i] == 6;
            has2 |= p.changed.v[i] == 2;
        }
        cr_expect(has5, "router 5 comes again, with the route");
        cr_expect_not(has6);
        cr_expect_not(has2);
    }
    cr_expect_eq(p.removed.n, 0);
    mapper_plan_free(&p);
    state_net_unref(was.net);
}
