/* Unit tests for core/config: both layouts, defaults, env overrides, validation messages,
 * file search, limits. Criterion runs each test in its own process, so setenv/chdir are
 * local to a test. */
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "config/config_internal.h"

#define DATA HS_SOURCE_DIR "/tests/unit/data/config"
#define SEC HS_USEC_PER_SEC

static struct hs_config cfg;
static struct config_diags diags;
static char tmpdir[64];

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

/* Criterion ignores LeakSanitizer's exit status and failures in .fini, so every test body
 * is followed by a leak check inside the test itself. */
static void leak_check(void)
{
#ifdef __SANITIZE_ADDRESS__
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the report above)");
#endif
}

static void fini(void);

#define CFG_TEST_WITH(name, teardown)                                                       \
    static void name##_body(void);                                                          \
    Test(config, name, .fini = teardown)                                                    \
    {                                                                                       \
        name##_body();                                                                      \
        fini();                                                                             \
        leak_check();                                                                       \
    }                                                                                       \
    static void name##_body(void)
#define CFG_TEST(name) CFG_TEST_WITH(name, fini)
#define CFG_TEST_TMP(name) CFG_TEST_WITH(name, fini_tmp)

static void fini(void)
{
    config_free(&cfg);
    config_diags_free(&diags);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void fini_tmp(void)
{
    fini();
    if (tmpdir[0])
        nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void make_tmp(void)
{
    strcpy(tmpdir, "/tmp/hs-config-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

/* Writes text to tmpdir/name (creating its directories) and returns the path. */
static char *put(const char *name, const char *text)
{
    char *p = hs_aprintf("%s/%s", tmpdir, name), *slash = strrchr(p, '/');
    FILE *f;

    *slash = '\0';
    cr_assert_eq(hs_mkdir_p(p, 0700), 0);
    *slash = '/';
    cr_assert_not_null(f = fopen(p, "w"));
    fputs(text, f);
    fclose(f);
    return p;
}

static int load(const char *text)
{
    return config_load_text(text, strlen(text), "/etc/hs", CONFIG_FOR_SERVER, &cfg, &diags);
}

static size_t count(enum config_diag_level lvl)
{
    size_t n = 0;
    for (size_t i = 0; i < diags.n; i++)
        n += diags.v[i].level == lvl;
    return n;
}

static const struct config_diag *find(enum config_diag_level lvl, const char *key)
{
    for (size_t i = 0; i < diags.n; i++)
        if (diags.v[i].level == lvl && hs_streq(diags.v[i].key, key))
            return &diags.v[i];
    return NULL;
}

static void dump(void)
{
    config_diags_print(&diags, stderr);
}

/* The text must fail with an error on key, at line (0 = don't care), mentioning substr. */
static void expect_error(const char *text, const char *key, int line, const char *substr)
{
    const struct config_diag *g;

    cr_assert_eq(load(text), -EINVAL, "no error for:\n%s", text);
    g = find(CONFIG_ERROR, key);
    if (!g)
        dump();
    cr_assert_not_null(g, "no error naming %s for:\n%s", key, text);
    if (line)
        cr_assert_eq(g->line, line, "%s: line %d, want %d", key, g->line, line);
    if (substr)
        cr_assert(strstr(g->msg, substr), "%s: \"%s\" lacks \"%s\"", key, g->msg, substr);
    fini();
}

/* ---- defaults ---- */

/* derp.server.mesh_url must be a URL the other replicas can dial, and says so when it cannot
 * take effect (no mesh key, SQLite, relay off). */
#define MESH_BASE "derp:\n  server:\n    enabled: true\n    stun_listen_addr: 0.0.0.0:3478\n"
CFG_TEST(mesh_url_checked_and_warned_when_inert)
{
    expect_error(MESH_BASE "    mesh_key_path: /k\n    mesh_url: ftp://x/derp\n",
                 "derp.server.mesh_url", 0, "ftp://x/derp");
    cr_assert_eq(load(MESH_BASE "    mesh_key_path: /k\n    mesh_url: http://10.0.0.1:8080/derp\n"
                      "database:\n  type: postgres\n  postgres: {host: db, name: hs, user: hs}\n"),
                 0);
    cr_expect_null(find(CONFIG_WARNING, "derp.server.mesh_url"));
    cr_expect_str_eq(cfg.derp_server_mesh_url, "http://10.0.0.1:8080/derp");
    fini();
    cr_assert_eq(load(MESH_BASE "    mesh_key_path: /k\n    mesh_url: http://10.0.0.1:8080/derp\n"),
                 0);
    cr_expect(find(CONFIG_WARNING, "derp.server.mesh_url") &&
              strstr(find(CONFIG_WARNING, "derp.server.mesh_url")->msg, "SQLite"));
    fini();
    cr_assert_eq(load(MESH_BASE "    mesh_url: http://10.0.0.1:8080/derp\n"), 0);
    cr_expect(find(CONFIG_WARNING, "derp.server.mesh_url") &&
              strstr(find(CONFIG_WARNING, "derp.server.mesh_url")->msg, "mesh_key_path"));
    fini();
    cr_assert_eq(load("derp:\n  server:\n    mesh_url: http://10.0.0.1:8080/derp\n"), 0);
    cr_expect(find(CONFIG_WARNING, "derp.server.mesh_url") &&
              strstr(find(CONFIG_WARNING, "derp.server.mesh_url")->msg, "enabled is false"));
}

CFG_TEST(bare_defaults)
{
    cr_assert_eq(config_load_text("", 0, NULL, CONFIG_FOR_SERVER, &cfg, &diags), 0);
    cr_assert_eq(diags.n, 0);
    cr_assert_str_eq(cfg.server_url, "http://127.0.0.1:8080");
    cr_assert_str_eq(cfg.listen_addr, "127.0.0.1:8080");
    cr_assert_str_eq(cfg.metrics_listen_addr, "");
    cr_assert_str_eq(cfg.noise_private_key_path, "/var/lib/headscale/noise_private.key");
    cr_assert_str_eq(cfg.sqlite_path, "/var/lib/headscale/db.sqlite");
    cr_assert_eq(cfg.db_type, DB_SQLITE);
    cr_assert(cfg.sqlite_wal);
    cr_assert_eq(cfg.sqlite_wal_autocheckpoint, 1000);
    cr_assert_str_eq(cfg.prefix_v4.text, "100.64.0.0/10");
    cr_assert_str_eq(cfg.prefix_v6.text, "fd7a:115c:a1e0::/48");
    cr_assert_eq(cfg.ip_allocation, IP_ALLOC_SEQUENTIAL);
    cr_assert_eq(cfg.ephemeral_inactivity_timeout_us, 120 * SEC, "headscale's code default");
    cr_assert_eq(cfg.node_expiry_us, 0);
    cr_assert(!cfg.derp_auto_update, "headscale sets no default: false");
    cr_assert_eq(cfg.derp_update_frequency_us, 3 * 3600 * SEC);
    cr_assert_eq(cfg.derp_server_region_id, 999);
    cr_assert_str_eq(cfg.derp_server_region_code, "headscale");
    cr_assert_str_eq(cfg.derp_server_region_name, "Headscale Embedded DERP");
    cr_assert(cfg.derp_server_verify_clients && cfg.derp_server_auto_add_region);
    cr_assert(!cfg.derp_server_enabled);
    cr_assert(!cfg.dns_magic_dns, "no base_domain: MagicDNS quietly off");
    cr_assert_str_eq(cfg.dns_base_domain, "");
    cr_assert(cfg.dns_override_local_dns);
    cr_assert(!cfg.dns_use_username_in_magic_dns);
    cr_assert_str_eq(cfg.unix_socket, "/var/run/headscale/headscale.sock");
    cr_assert_eq(cfg.unix_socket_permission, 0700, "what headscale's socket really gets");
    cr_assert_eq(cfg.cli_timeout_us, 5 * SEC);
    cr_assert_eq(cfg.log_level, LOG_INFO);
    cr_assert(!cfg.log_json);
    cr_assert_eq(cfg.policy_mode, POLICY_MODE_FILE);
    cr_assert_str_eq(cfg.policy_path, "");
    cr_assert_eq(cfg.pg_port, 5432);
    cr_assert_eq(cfg.pg_max_open_conns, 10);
    cr_assert_eq(cfg.pg_max_idle_conns, 10);
    cr_assert_eq(cfg.pg_conn_max_idle_time_secs, 3600);
    cr_assert_eq(cfg.pg_unreachable_timeout_us, 15 * SEC);
    cr_assert_str_eq(cfg.pg_sslmode, "disable");
    cr_assert_eq(cfg.tuning_batch_change_delay_us, 20000);
    cr_assert_eq(cfg.tuning_register_cache_expiration_us, 15 * 60 * SEC);
    cr_assert_eq(cfg.tuning_register_cache_max_entries, 1024);
    cr_assert_eq(cfg.tuning_register_rate_limit, 20);
    cr_assert_eq(cfg.tuning_keepalive_interval_us, 50 * SEC);
    cr_assert_eq(cfg.tuning_unreachable_client_timeout_us, 60 * SEC);
    cr_assert(cfg.taildrop_enabled && !cfg.logtail_enabled);
    cr_assert_eq(cfg.oidc_scope.n, 3);
    cr_assert_str_eq(cfg.oidc_scope.v[0], "openid");
    cr_assert_str_eq(cfg.oidc_pkce_method, "S256");
    cr_assert(cfg.oidc_only_start_if_available && cfg.oidc_email_verified_required);
    cr_assert_eq(cfg.oidc_expiry_us, 0);
    cr_assert_str_eq(cfg.tls_letsencrypt_challenge_type, "HTTP-01");
    cr_assert_str_eq(cfg.acme_url, "https://acme-v02.api.letsencrypt.org/directory");
    cr_assert(!cfg.legacy);
    cr_assert_null(cfg.path);
}

CFG_TEST(default_paths_beside_config)
{
    cr_assert_eq(load(""), 0);
    cr_assert_str_eq(cfg.noise_private_key_path, "/etc/hs/noise_private.key");
    cr_assert_str_eq(cfg.sqlite_path, "/etc/hs/db.sqlite");
    cr_assert_str_eq(cfg.derp_server_private_key_path, "/etc/hs/derp_server_private.key");
}

CFG_TEST(every_string_field_is_non_null)
{
    cr_assert_eq(load("server_url: http://x\n"), 0);
    for (size_t i = 0; i < config__nkeys; i++) {
        const struct key_def *k = &config__keys[i];
        if (k->type == K_STR || k->type == K_PATH || k->type == K_ADDR || k->type == K_CHOICE)
            cr_assert_not_null(*(char **)((char *)&cfg + k->off), "%s", k->name);
    }
}

/* ---- the two layouts ---- */

CFG_TEST(current_layout_file)
{
    char *dir = realpath(DATA, NULL);
    char *p;

    cr_assert_eq(config_load(DATA "/current.yaml", CONFIG_FOR_SERVER, &cfg, &diags), 0);
    cr_assert_eq(diags.n, 0);
    cr_assert(!cfg.legacy);
    cr_assert_str_eq(cfg.dir, dir);
    cr_assert_str_eq(cfg.server_url, "https://headscale.example.com");
    cr_assert_str_eq(cfg.listen_addr, "[::]:443");
    cr_assert_eq(cfg.trusted_proxies.n, 2);
    cr_assert_str_eq(cfg.prefix_v4.text, "100.100.0.0/16");
    cr_assert_str_eq(cfg.prefix_v6.text, "fd7a:115c:a1e0:1::/64");
    cr_assert_eq(cfg.ip_allocation, IP_ALLOC_RANDOM);
    cr_assert(cfg.derp_server_enabled && !cfg.derp_server_verify_clients);
    cr_assert_eq(cfg.derp_server_region_id, 901);
    cr_assert_str_eq(cfg.derp_server_ipv4, "203.0.113.7");
    cr_assert_eq(cfg.derp_update_frequency_us, 5400 * SEC);
    cr_assert_eq(cfg.node_expiry_us, 90 * 86400 * SEC);
    cr_assert_eq(cfg.ephemeral_inactivity_timeout_us, 600 * SEC);
    cr_assert_eq(cfg.db_type, DB_SQLITE);
    cr_assert(!cfg.sqlite_wal);
    cr_assert_eq(cfg.sqlite_wal_autocheckpoint, 500);
    p = hs_aprintf("%s/state/db.sqlite", dir);
    cr_assert_str_eq(cfg.sqlite_path, p);
    free(p);
    p = hs_aprintf("%s/keys/noise.key", dir);
    cr_assert_str_eq(cfg.noise_private_key_path, p);
    free(p);
    p = hs_aprintf("%s/derp/map.yaml", dir);
    cr_assert_str_eq(cfg.derp_paths.v[0], p);
    free(p);
    cr_assert_str_eq(cfg.tls_key_path, "/etc/ssl/key.pem");
    cr_assert_eq(cfg.log_level, LOG_WARN);
    cr_assert_eq(cfg.policy_mode, POLICY_MODE_DATABASE);
    cr_assert(cfg.dns_magic_dns && !cfg.dns_override_local_dns);
    cr_assert_str_eq(cfg.dns_base_domain, "ts.example.net");
    cr_assert_eq(cfg.dns_nameservers_global.n, 2);
    cr_assert_str_eq(cfg.dns_nameservers_global.v[1], "https://dns.nextdns.io/abc123");
    cr_assert_eq(cfg.dns_nsplit, 1);
    cr_assert_str_eq(cfg.dns_split[0].domain, "corp.example.com");
    cr_assert_str_eq(cfg.dns_split[0].nameservers.v[0], "10.0.0.1");
    cr_assert_eq(cfg.dns_nextra_records, 2);
    cr_assert_str_eq(cfg.dns_extra_records[1].type, "AAAA");
    cr_assert_str_eq(cfg.unix_socket, "/run/hs.sock");
    cr_assert_eq(cfg.unix_socket_permission, 0750);
    cr_assert(cfg.oidc_pkce_enabled);
    cr_assert_str_eq(cfg.oidc_pkce_method, "plain");
    cr_assert(cfg.logtail_enabled && !cfg.taildrop_enabled);
    cr_assert_str_eq(cfg.cli_address, "hs.example.com:443");
    cr_assert(cfg.cli_insecure);
    cr_assert_eq(cfg.cli_timeout_us, 10 * SEC);
    cr_assert_eq(cfg.tuning_batch_change_delay_us, 50000);
    cr_assert_eq(cfg.tuning_register_cache_max_entries, 64);
    cr_assert(!cfg.dns_use_username_in_magic_dns);
    free(dir);
}

CFG_TEST(legacy_0_22_file)
{
    char *dir = realpath(DATA, NULL), *p;

    cr_assert_eq(config_load(DATA "/legacy-0.22.yaml", CONFIG_FOR_SERVER, &cfg, &diags), 0);
    cr_assert(cfg.legacy);
    /* Warnings only for the keys that do nothing here, one each, at their lines. */
    for (size_t i = 0; i < diags.n; i++)
        cr_assert(strstr(diags.v[i].msg, "has no effect"), "%s", diags.v[i].msg);
    cr_assert_eq(count(CONFIG_WARNING), 3);
    cr_assert_eq(find(CONFIG_WARNING, "grpc_listen_addr")->line, 6);
    cr_assert_null(find(CONFIG_WARNING, "metrics_listen_addr"), "it works");
    cr_assert_eq(find(CONFIG_WARNING, "node_update_check_interval")->line, 27);
    cr_assert_null(find(CONFIG_WARNING, "oidc.issuer"), "OIDC works");
    cr_assert_null(find(CONFIG_WARNING, "disable_check_updates"), "true: what we do");
    cr_assert_null(find(CONFIG_WARNING, "acme_url"), "the default");
    cr_assert_eq(cfg.db_type, DB_POSTGRES);
    cr_assert_str_eq(cfg.pg_host, "db.internal");
    cr_assert_eq(cfg.pg_port, 5433);
    cr_assert_str_eq(cfg.pg_name, "headscale");
    cr_assert_str_eq(cfg.pg_user, "hs");
    cr_assert_str_eq(cfg.pg_pass, "s3cret");
    cr_assert_str_eq(cfg.pg_sslmode, "require");
    cr_assert_str_eq(cfg.prefix_v4.text, "100.64.0.0/10");
    cr_assert_str_eq(cfg.prefix_v6.text, "fd7a:115c:a1e0::/48");
    cr_assert_eq(cfg.ephemeral_inactivity_timeout_us, 45 * 60 * SEC);
    cr_assert_eq(cfg.node_update_check_interval_us, 15 * SEC);
    cr_assert_eq(cfg.derp_update_frequency_us, 24 * 3600 * SEC, "0.22 default");
    cr_assert_eq(cfg.derp_server_region_id, 900);
    cr_assert(!cfg.derp_auto_update);
    cr_assert(cfg.disable_check_updates);
    p = hs_aprintf("%s/acl.hujson", dir);
    cr_assert_str_eq(cfg.policy_path, p);
    free(p);
    p = hs_aprintf("%s/private.key", dir);
    cr_assert_str_eq(cfg.legacy_private_key_path, p);
    cr_assert_str_eq(cfg.derp_server_private_key_path, p, "0.22.3's DERP key");
    free(p);
    p = hs_aprintf("%s/cache", dir);
    cr_assert_str_eq(cfg.tls_letsencrypt_cache_dir, p);
    free(p);
    p = hs_aprintf("%s/oidc_secret", dir);
    cr_assert_str_eq(cfg.oidc_client_secret_path, p);
    free(p);
    cr_assert_eq(cfg.log_level, LOG_DEBUG);
    cr_assert(cfg.log_json);
    cr_assert(cfg.dns_magic_dns && cfg.dns_override_local_dns);
    cr_assert_str_eq(cfg.dns_base_domain, "tail.example.org");
    cr_assert_eq(cfg.dns_nameservers_global.n, 2);
    cr_assert_eq(cfg.dns_nsplit, 2);
    cr_assert_str_eq(cfg.dns_split[1].domain, "lab.example.org");
    cr_assert_eq(cfg.dns_split[1].nameservers.n, 2);
    cr_assert_eq(cfg.dns_search_domains.n, 1);
    cr_assert_eq(cfg.dns_nextra_records, 1);
    cr_assert_str_eq(cfg.dns_extra_records[0].value, "100.64.0.3");
    cr_assert(cfg.dns_use_username_in_magic_dns, "0.22 names are <node>.<user>.<base>");
    cr_assert(!cfg.oidc_only_start_if_available);
    cr_assert_eq(cfg.oidc_expiry_us, 30 * 86400 * SEC);
    cr_assert(!cfg.oidc_strip_email_domain);
    cr_assert_eq(cfg.oidc_scope.n, 4);
    cr_assert_eq(cfg.oidc_extra_params.n, 1);
    cr_assert_str_eq(cfg.oidc_extra_params.v[0], "domain_hint=example.org");
    cr_assert(cfg.randomize_client_port);
    free(dir);
}

CFG_TEST(legacy_defaults)
{
    cr_assert_eq(load("db_type: sqlite3\ndb_path: hs.db\n"), 0);
    cr_assert(cfg.legacy);
    cr_assert_str_eq(cfg.sqlite_path, "/etc/hs/hs.db");
    cr_assert_str_eq(cfg.dns_base_domain, "headscale.net");
    /* headscale 0.22.3's own defaults where they differ from 0.29's (hscontrol/config.go):
     * MagicDNS only when dns_config.magic_dns says so, IPv4 only without ip_prefixes. */
    cr_assert(!cfg.dns_magic_dns);
    cr_assert_str_eq(cfg.prefix_v4.text, "100.64.0.0/10");
    cr_assert_eq(cfg.prefix_v6.family, 0);
    cr_assert_eq(cfg.ephemeral_inactivity_timeout_us, 120 * SEC);
    cr_assert(!cfg.derp_auto_update);
    cr_assert(cfg.dns_use_username_in_magic_dns);
    cr_assert_eq(cfg.derp_update_frequency_us, 24 * 3600 * SEC);
    cr_assert_eq(cfg.oidc_expiry_us, 180 * 86400 * SEC);
    cr_assert(cfg.oidc_strip_email_domain);
}

CFG_TEST(legacy_ip_prefixes_single_family)
{
    cr_assert_eq(load("ip_prefixes: [100.64.0.0/10]\n"), 0);
    cr_assert_eq(cfg.prefix_v4.family, AF_INET);
    cr_assert_eq(cfg.prefix_v6.family, 0, "0.22: only the listed families");
}

CFG_TEST(both_layouts_current_wins)
{
    const struct config_diag *g;

    cr_assert_eq(load("db_path: old.db\ndatabase:\n  sqlite:\n    path: new.db\n"), 0);
    cr_assert_str_eq(cfg.sqlite_path, "/etc/hs/new.db");
    cr_assert_not_null(g = find(CONFIG_WARNING, "db_path"));
    cr_assert_eq(g->line, 1);
    cr_assert(strstr(g->msg, "database.sqlite.path"));
}

CFG_TEST(both_prefix_layouts_current_wins)
{
    cr_assert_eq(load("prefixes:\n  v4: 100.64.0.0/16\nip_prefixes: [100.64.0.0/10]\n"), 0);
    cr_assert_str_eq(cfg.prefix_v4.text, "100.64.0.0/16");
    cr_assert_not_null(find(CONFIG_WARNING, "ip_prefixes"));
}

CFG_TEST(json_file_is_yaml)
{
    cr_assert_eq(config_load(DATA "/json/config.json", CONFIG_FOR_SERVER, &cfg, &diags), 0);
    cr_assert_str_eq(cfg.server_url, "https://json.example.com");
    cr_assert(hs_has_prefix(cfg.sqlite_path, "/") && strstr(cfg.sqlite_path, "/json/j.db"));
}

/* ---- environment ---- */

CFG_TEST(env_overrides_file)
{
    setenv("HEADSCALE_DATABASE_SQLITE_PATH", "env.db", 1);
    setenv("HEADSCALE_SERVER_URL", "https://env.example.com", 1);
    setenv("HEADSCALE_DNS_NAMESERVERS_GLOBAL", "127.0.0.11 1.1.1.1", 1);
    setenv("HEADSCALE_DERP_SERVER_ENABLED", "true", 1);
    setenv("HEADSCALE_DERP_SERVER_STUN_LISTEN_ADDR", ":3478", 1);
    setenv("HEADSCALE_LOG_LEVEL", "trace", 1);
    setenv("HEADSCALE_NODE_EXPIRY", "1h30m", 1);
    setenv("HEADSCALE_TAILDROP_ENABLED", "", 1); /* empty = unset, as viper */
    cr_assert_eq(load("server_url: https://file.example.com\ntaildrop:\n  enabled: false\n"), 0);
    cr_assert_str_eq(cfg.sqlite_path, "/etc/hs/env.db");
    cr_assert_str_eq(cfg.server_url, "https://env.example.com");
    cr_assert_eq(cfg.dns_nameservers_global.n, 2);
    cr_assert_str_eq(cfg.dns_nameservers_global.v[0], "127.0.0.11");
    cr_assert(cfg.derp_server_enabled);
    cr_assert_eq(cfg.log_level, LOG_TRACE);
    cr_assert_eq(cfg.node_expiry_us, 5400 * SEC);
    cr_assert(!cfg.taildrop_enabled);
    unsetenv("HEADSCALE_DATABASE_SQLITE_PATH");
    unsetenv("HEADSCALE_SERVER_URL");
    unsetenv("HEADSCALE_DNS_NAMESERVERS_GLOBAL");
    unsetenv("HEADSCALE_DERP_SERVER_ENABLED");
    unsetenv("HEADSCALE_DERP_SERVER_STUN_LISTEN_ADDR");
    unsetenv("HEADSCALE_LOG_LEVEL");
    unsetenv("HEADSCALE_NODE_EXPIRY");
    unsetenv("HEADSCALE_TAILDROP_ENABLED");
}

CFG_TEST(env_legacy_keys)
{
    setenv("HEADSCALE_DB_TYPE", "postgres", 1);
    setenv("HEADSCALE_DB_PORT", "6000", 1);
    setenv("HEADSCALE_DATABASE_POSTGRES_PORT", "6001", 1); /* current name wins */
    setenv("HEADSCALE_DB_HOST", "pg", 1);
    setenv("HEADSCALE_IP_PREFIXES", "100.64.0.0/10 fd7a:115c:a1e0::/48", 1);
    cr_assert_eq(load("database:\n  type: sqlite\n"), 0);
    cr_assert(cfg.legacy);
    cr_assert_eq(cfg.db_type, DB_POSTGRES);
    cr_assert_eq(cfg.pg_port, 6001);
    cr_assert_str_eq(cfg.pg_host, "pg");
    cr_assert_eq(cfg.prefix_v6.family, AF_INET6);
    cr_assert_not_null(find(CONFIG_WARNING, "database.postgres.port"));
    unsetenv("HEADSCALE_DB_TYPE");
    unsetenv("HEADSCALE_DB_PORT");
    unsetenv("HEADSCALE_DATABASE_POSTGRES_PORT");
    unsetenv("HEADSCALE_DB_HOST");
    unsetenv("HEADSCALE_IP_PREFIXES");
}

CFG_TEST(env_structured_values)
{
    setenv("HEADSCALE_DNS_NAMESERVERS_SPLIT", "{\"corp.example\": [\"10.0.0.1\", \"10.0.0.2\"]}", 1);
    setenv("HEADSCALE_DNS_EXTRA_RECORDS", "[{name: x.example, type: A, value: 100.64.0.1}]", 1);
    setenv("HEADSCALE_OIDC_SCOPE", "openid email", 1);
    cr_assert_eq(load(""), 0);
    cr_assert_eq(cfg.dns_nsplit, 1);
    cr_assert_eq(cfg.dns_split[0].nameservers.n, 2);
    cr_assert_eq(cfg.dns_nextra_records, 1);
    cr_assert_eq(cfg.oidc_scope.n, 2);
    unsetenv("HEADSCALE_DNS_NAMESERVERS_SPLIT");
    unsetenv("HEADSCALE_DNS_EXTRA_RECORDS");
    unsetenv("HEADSCALE_OIDC_SCOPE");
}

CFG_TEST(env_bad_value_names_variable)
{
    const struct config_diag *g;

    setenv("HEADSCALE_DATABASE_POSTGRES_PORT", "abc", 1);
    cr_assert_eq(load("database:\n  postgres:\n    port: 5433\n"), -EINVAL);
    cr_assert_not_null(g = find(CONFIG_ERROR, "database.postgres.port"));
    cr_assert_eq(g->line, 0);
    cr_assert(strstr(g->msg, "$HEADSCALE_DATABASE_POSTGRES_PORT"));
    cr_assert_eq(cfg.pg_port, 5433, "falls back to the file value");
    unsetenv("HEADSCALE_DATABASE_POSTGRES_PORT");
}

/* ---- value syntax ---- */

CFG_TEST(durations)
{
    static const struct { const char *s; int64_t us; } cases[] = {
        { "30s", 30 * SEC },        { "30m", 1800 * SEC },   { "24h", 86400 * SEC },
        { "365d", 365 * 86400 * SEC }, { "800ms", 800000 }, { "1h30m", 5400 * SEC },
        { "0", 0 },
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(cases); i++) {
        char *t = hs_aprintf("node:\n  expiry: %s\n", cases[i].s);
        cr_assert_eq(load(t), 0, "%s", cases[i].s);
        cr_assert_eq(cfg.node_expiry_us, cases[i].us, "%s", cases[i].s);
        fini();
        free(t);
    }
    expect_error("node:\n  expiry: 5\n", "node.expiry", 2, "duration");
    expect_error("node:\n  expiry: soon\n", "node.expiry", 2, "\"soon\"");
}

CFG_TEST(socket_permission_forms)
{
    static const struct { const char *s; unsigned mode; } cases[] = {
        { "\"0770\"", 0770 }, { "0o770", 0770 }, { "0770", 0770 }, { "0600", 0600 },
        { "'0o700'", 0700 },  { "755", 0755 },
    };
    for (size_t i = 0; i < HS_ARRAY_LEN(cases); i++) {
        char *t = hs_aprintf("unix_socket_permission: %s\n", cases[i].s);
        cr_assert_eq(load(t), 0, "%s", cases[i].s);
        cr_assert_eq(cfg.unix_socket_permission, cases[i].mode, "%s", cases[i].s);
        fini();
        free(t);
    }
    expect_error("unix_socket_permission: \"0999\"\n", "unix_socket_permission", 1, "octal");
    expect_error("unix_socket_permission: rwx\n", "unix_socket_permission", 1, "octal");
}

CFG_TEST(yaml_booleans)
{
    cr_assert_eq(load("logtail:\n  enabled: yes\ntaildrop:\n  enabled: off\n"), 0);
    cr_assert(cfg.logtail_enabled && !cfg.taildrop_enabled);
}

CFG_TEST(relative_paths_resolve_against_config_dir)
{
    setenv("CREDS", "/run/creds", 1);
    cr_assert_eq(load("policy:\n  path: acl.hujson\ntls_cert_path: c.pem\ntls_key_path: k.pem\n"
                      "derp:\n  paths: [a.yaml, /abs/b.yaml]\n"
                      "dns:\n  extra_records_path: rec.json\n"
                      "oidc:\n  client_secret_path: ${CREDS}/secret\n"
                      "noise:\n  private_key_path: n.key\n"),
                 0);
    cr_assert_str_eq(cfg.policy_path, "/etc/hs/acl.hujson");
    cr_assert_str_eq(cfg.tls_cert_path, "/etc/hs/c.pem");
    cr_assert_str_eq(cfg.tls_key_path, "/etc/hs/k.pem");
    cr_assert_str_eq(cfg.derp_paths.v[0], "/etc/hs/a.yaml");
    cr_assert_str_eq(cfg.derp_paths.v[1], "/abs/b.yaml");
    cr_assert_str_eq(cfg.dns_extra_records_path, "/etc/hs/rec.json");
    cr_assert_str_eq(cfg.oidc_client_secret_path, "/run/creds/secret");
    cr_assert_str_eq(cfg.noise_private_key_path, "/etc/hs/n.key");
    unsetenv("CREDS");
}

CFG_TEST(parse_prefix)
{
    struct ip_prefix p;

    cr_assert_eq(config_parse_prefix("100.64.0.0/10", &p), 0);
    cr_assert_eq(p.family, AF_INET);
    cr_assert_eq(p.bits, 10);
    cr_assert_str_eq(p.text, "100.64.0.0/10");
    cr_assert_eq(config_parse_prefix("FD7A:115C:A1E0:0::/48", &p), 0);
    cr_assert_str_eq(p.text, "fd7a:115c:a1e0::/48");
    cr_assert_eq(config_parse_prefix("100.64.0.1/10", &p), -EINVAL);
    cr_assert_eq(config_parse_prefix("100.64.0.0/33", &p), -EINVAL);
    cr_assert_eq(config_parse_prefix("100.64.0.0", &p), -EINVAL);
    cr_assert_eq(config_parse_prefix("banana/8", &p), -EINVAL);
    cr_assert_eq(config_parse_prefix("10.0.0.0/", &p), -EINVAL);
}

/* ---- validation: each bad value is an error naming the key and its line ---- */

CFG_TEST(bad_values)
{
    expect_error("server_url: ftp://x\n", "server_url", 1, "http://");
    expect_error("server_url: https://hs.example.com\ndns:\n  base_domain: example.com\n",
                 "server_url", 1, "subdomain");
    expect_error("server_url: https://example.com\ndns:\n  base_domain: example.com\n",
                 "server_url", 1, "base_domain");
    expect_error("database:\n  type: mysql\n", "database.type", 2, "sqlite, sqlite3, postgres");
    expect_error("x: 1\ndatabase:\n  postgres:\n    port: abc\n", "database.postgres.port", 4,
                 "must be a number between 1 and 65535, got \"abc\"");
    expect_error("database:\n  postgres:\n    port: 70000\n", "database.postgres.port", 3, NULL);
    expect_error("db_port: 0\n", "db_port", 1, "between 1 and 65535");
    expect_error("prefixes:\n  v4: 100.64.0.1/10\n", "prefixes.v4", 2, "host bits");
    expect_error("prefixes:\n  v4: banana\n", "prefixes.v4", 2, "banana");
    expect_error("prefixes:\n  v4: fd7a:115c:a1e0::/48\n", "prefixes.v4", 2, "IPv4 one");
    expect_error("prefixes:\n  v6: 100.64.0.0/10\n", "prefixes.v6", 2, "IPv6 one");
    expect_error("prefixes:\n  v4: \"\"\n  v6: \"\"\n", "prefixes.v4", 0, "at least one");
    expect_error("ip_prefixes: [100.64.0.0/33]\n", "ip_prefixes", 1, NULL);
    expect_error("dns:\n  magic_dns: true\n", "dns.base_domain", 0, "magic_dns");
    expect_error("node:\n  ephemeral:\n    inactivity_timeout: 60s\n",
                 "node.ephemeral.inactivity_timeout", 3, "65s");
    expect_error("ephemeral_node_inactivity_timeout: 65s\n", "ephemeral_node_inactivity_timeout",
                 1, "65s");
    expect_error("log:\n  level: loud\n", "log.level", 2, "loud");
    expect_error("log:\n  format: xml\n", "log.format", 2, "text, json");
    expect_error("policy:\n  mode: s3\n", "policy.mode", 2, "file, database");
    expect_error("tls_cert_path: c.pem\n", "tls_key_path", 0, "tls_cert_path");
    expect_error("tls_key_path: k.pem\n", "tls_cert_path", 0, NULL);
    expect_error("derp:\n  server:\n    enabled: true\n", "derp.server.stun_listen_addr", 0,
                 "derp.server.enabled");
    expect_error("tls_letsencrypt_hostname: hs.example.com\ntls_cert_path: c\ntls_key_path: k\n",
                 "tls_letsencrypt_hostname", 1, "tls_cert_path");
    expect_error("tls_letsencrypt_challenge_type: DNS-01\n", "tls_letsencrypt_challenge_type", 1,
                 "HTTP-01");
    expect_error("listen_addr: localhost\n", "listen_addr", 1, "host:port");
    expect_error("listen_addr: ::1:80\n", "listen_addr", 1, "brackets");
    expect_error("logtail:\n  enabled: maybe\n", "logtail.enabled", 2, "true or false");
    expect_error("dns:\n  base_domain: x.net\n  extra_records:\n    - {name: a, type: MX, value: x}\n",
                 "dns.extra_records", 4, "A or AAAA");
    expect_error("dns:\n  base_domain: x.net\n  extra_records:\n    - {name: a, type: A, value: \"::1\"}\n",
                 "dns.extra_records", 4, "IPv4");
    expect_error("dns:\n  override_local_dns: true\n  base_domain: x.net\n",
                 "dns.nameservers.global", 0, NULL);
    expect_error("trusted_proxies: [0.0.0.0/0]\n", "trusted_proxies", 1, "every address");
    expect_error("derp:\n  server:\n    ipv4: 2001:db8::1\n", "derp.server.ipv4", 3, "IPv4");
    expect_error("database:\n  postgres:\n    ssl: sometimes\n", "database.postgres.ssl", 3,
                 "verify-full");
    expect_error("oidc:\n  client_secret: a\n  client_secret_path: /b\n",
                 "oidc.client_secret_path", 3, NULL);
    expect_error("cli:\n  timeout: 0\n", "cli.timeout", 2, NULL);
}

CFG_TEST(type_mismatches)
{
    expect_error("database: sqlite\n", "database", 1, "mapping");
    expect_error("server_url: [a, b]\n", "server_url", 1, "a single value, got a list");
    expect_error("database:\n  postgres:\n    port: {a: 1}\n", "database.postgres.port", 3,
                 "got a mapping");
    expect_error("dns:\n  nameservers:\n    global: {a: b}\n", "dns.nameservers.global", 3,
                 "list");
    expect_error("dns:\n  nameservers:\n    split: [1.1.1.1]\n", "dns.nameservers.split", 3,
                 "mapping");
    expect_error("derp:\n  urls: [[a]]\n", "derp.urls", 2, "single values");
}

CFG_TEST(duplicate_keys)
{
    expect_error("server_url: http://a\nlisten_addr: :1\nserver_url: http://b\n", "server_url", 3,
                 "line 1");
    expect_error("database:\n  type: sqlite\n  type: postgres\n", "database.type", 3, NULL);
    expect_error("database.type: sqlite\ndatabase:\n  type: postgres\n", "database.type", 3, NULL);
}

CFG_TEST(duplicate_key_keeps_first)
{
    cr_assert_eq(load("log:\n  level: debug\n  level:\n    nested: [1]\n"), -EINVAL);
    cr_assert_eq(cfg.log_level, LOG_DEBUG);
}

CFG_TEST(unknown_key_is_warning)
{
    const struct config_diag *g;

    cr_assert_eq(load("server_url: http://a\nbogus: 1\ndatabase:\n  sqlite:\n    pth: x\n"), 0);
    cr_assert_eq(count(CONFIG_ERROR), 0);
    cr_assert_not_null(g = find(CONFIG_WARNING, "bogus"));
    cr_assert_eq(g->line, 2);
    cr_assert_not_null(g = find(CONFIG_WARNING, "database.sqlite.pth"));
    cr_assert_eq(g->line, 5);
}

CFG_TEST(keys_are_case_insensitive)
{
    cr_assert_eq(load("Server_URL: https://CASE.example.com\n"), 0);
    cr_assert_str_eq(cfg.server_url, "https://CASE.example.com");
}

CFG_TEST(null_values_keep_defaults)
{
    cr_assert_eq(load("database:\n  sqlite:\n    path:\ndns:\nlog: ~\n"), 0);
    cr_assert_str_eq(cfg.sqlite_path, "/etc/hs/db.sqlite");
    cr_assert_eq(diags.n, 0);
}

CFG_TEST(cli_purpose_downgrades_server_errors)
{
    const char *t = "database:\n  type: mysql\nserver_url: ftp://x\nprefixes: banana\n";

    cr_assert_eq(config_load_text(t, strlen(t), NULL, CONFIG_FOR_CLI, &cfg, &diags), 0);
    cr_assert_eq(count(CONFIG_ERROR), 0);
    cr_assert_not_null(find(CONFIG_WARNING, "database.type"));
    cr_assert_not_null(find(CONFIG_WARNING, "server_url"));
    fini();
    t = "cli:\n  timeout: forever\n";
    cr_assert_eq(config_load_text(t, strlen(t), NULL, CONFIG_FOR_CLI, &cfg, &diags), -EINVAL);
    cr_assert_not_null(find(CONFIG_ERROR, "cli.timeout"));
    fini();
    t = "log:\n  level: loud\n";
    cr_assert_eq(config_load_text(t, strlen(t), NULL, CONFIG_FOR_CLI, &cfg, &diags), -EINVAL);
    fini();
    t = "unix_socket: [a]\n";
    cr_assert_eq(config_load_text(t, strlen(t), NULL, CONFIG_FOR_CLI, &cfg, &diags), -EINVAL);
    cr_assert_not_null(find(CONFIG_ERROR, "unix_socket"));
}

/* ---- limits and malformed input ---- */

CFG_TEST(depth_bomb)
{
    size_t n = 100000;
    char *t = hs_xmalloc(n + 4);

    memcpy(t, "a: ", 3);
    memset(t + 3, '[', n);
    t[n + 3] = '\0';
    cr_assert_eq(load(t), -EINVAL);
    cr_assert(strstr(diags.v[0].msg, "nested deeper"), "%s", diags.v[0].msg);
    free(t);
    fini();

    struct hs_buf b;
    hs_buf_init(&b, 1 << 16);
    for (int i = 0; i < CONFIG_MAX_DEPTH + 2; i++)
        hs_buf_appendf(&b, "%*sk%d:\n", i * 2, "", i);
    cr_assert_eq(load(b.data), -EINVAL);
    cr_assert(strstr(diags.v[0].msg, "nested deeper"));
    hs_buf_free(&b);
}

CFG_TEST(alias_and_multi_document_refused)
{
    expect_error("a: &x [1]\nb: *x\n", NULL, 2, "aliases");
    expect_error("server_url: http://a\n---\nserver_url: http://b\n", NULL, 2, "one YAML document");
    expect_error("server_url: [unclosed\n", NULL, 0, "invalid YAML");
    expect_error("- a\n- b\n", NULL, 1, "top level");
}

CFG_TEST_TMP(oversized_file)
{
    char *big = hs_xmalloc(CONFIG_MAX_FILE_BYTES + 2), *p;

    make_tmp();
    memset(big, '#', CONFIG_MAX_FILE_BYTES + 1);
    big[CONFIG_MAX_FILE_BYTES + 1] = '\0';
    p = put("config.yaml", big);
    cr_assert_eq(config_load(p, CONFIG_FOR_SERVER, &cfg, &diags), -EINVAL);
    cr_assert(strstr(diags.v[0].msg, "larger than"));
    cr_assert_str_eq(cfg.server_url, "http://127.0.0.1:8080", "defaults still filled");
    fini();
    cr_assert_eq(config_load_text(big, CONFIG_MAX_FILE_BYTES + 1, NULL, CONFIG_FOR_SERVER, &cfg,
                                  &diags), -EINVAL);
    free(big);
    free(p);
}

/* ---- finding the file ---- */

CFG_TEST(missing_explicit_file_is_error)
{
    cr_assert_eq(config_load("/nonexistent/config.yaml", CONFIG_FOR_SERVER, &cfg, &diags),
                 -EINVAL);
    cr_assert(strstr(diags.v[0].msg, "not found"));
    fini();
    setenv("HEADSCALE_CONFIG", "/nonexistent/hs.yaml", 1);
    cr_assert_eq(config_load(NULL, CONFIG_FOR_SERVER, &cfg, &diags), -EINVAL);
    unsetenv("HEADSCALE_CONFIG");
}

CFG_TEST_TMP(explicit_file_precedence)
{
    char *a, *b;

    make_tmp();
    a = put("a.yaml", "server_url: https://a.example.com\n");
    b = put("b.yaml", "server_url: https://b.example.com\n");
    setenv("HEADSCALE_CONFIG", a, 1);
    cr_assert_eq(config_load(NULL, CONFIG_FOR_SERVER, &cfg, &diags), 0);
    cr_assert_str_eq(cfg.server_url, "https://a.example.com");
    cr_assert_str_eq(cfg.path, a);
    fini();
    cr_assert_eq(config_load(b, CONFIG_FOR_SERVER, &cfg, &diags), 0, "-c beats the env");
    cr_assert_str_eq(cfg.server_url, "https://b.example.com");
    unsetenv("HEADSCALE_CONFIG");
    free(a);
    free(b);
}

CFG_TEST_TMP(search_order)
{
    char *h, *w;

    cr_assert(access("/etc/headscale", F_OK) != 0, "test needs no /etc/headscale");
    make_tmp();
    h = put("home/.headscale/config.yaml", "server_url: https://home.example.com\n");
    w = put("work/config.yaml", "server_url: https://cwd.example.com\n");
    unsetenv("HEADSCALE_CONFIG");
    char *home = hs_aprintf("%s/home", tmpdir), *work = hs_aprintf("%s/work", tmpdir);
    setenv("HOME", home, 1);
    cr_assert_eq(chdir(work), 0);
    free(home);
    free(work);
    cr_assert_eq(config_load(NULL, CONFIG_FOR_SERVER, &cfg, &diags), 0);
    cr_assert_str_eq(cfg.server_url, "https://home.example.com", "$HOME before cwd");
    fini();
    remove(h);
    cr_assert_eq(config_load(NULL, CONFIG_FOR_SERVER, &cfg, &diags), 0);
    cr_assert_str_eq(cfg.server_url, "https://cwd.example.com");
    fini();
    remove(w);
    cr_assert_eq(config_load(NULL, CONFIG_FOR_SERVER, &cfg, &diags), 0);
    cr_assert_null(cfg.path);
    cr_assert_eq(diags.n, 1);
    cr_assert_eq(diags.v[0].level, CONFIG_WARNING, "missing searched file only warns");
    free(h);
    free(w);
}

CFG_TEST(json_before_yaml_in_a_directory)
{
    cr_assert_eq(config_load(DATA "/json", CONFIG_FOR_SERVER, &cfg, &diags), 0);
    cr_assert_str_eq(cfg.server_url, "https://json.example.com");
}

/* ---- diagnostics output ---- */

CFG_TEST_TMP(diag_print_format)
{
    char *p, out[2048] = "";
    FILE *f;

    make_tmp();
    p = put("config.yaml", "server_url: http://a\nbogus: 1\ndatabase:\n  postgres:\n    port: abc\n");
    cr_assert_eq(config_load(p, CONFIG_FOR_SERVER, &cfg, &diags), -EINVAL);
    f = fmemopen(out, sizeof(out) - 1, "w");
    config_diags_print(&diags, f);
    fclose(f);
    char *want = hs_aprintf("warning: %s:2: bogus: unknown key\n"
                            "error: %s:5: database.postgres.port: must be a number between 1 "
                            "and 65535, got \"abc\"\n", p, p);
    cr_assert_str_eq(out, want);
    free(want);
    free(p);
    fini();
    load("dns:\n  magic_dns: true\n");
    memset(out, 0, sizeof(out));
    f = fmemopen(out, sizeof(out) - 1, "w");
    config_diags_print(&diags, f);
    fclose(f);
    cr_assert_str_eq(out, "error: dns.base_domain: must be set when dns.magic_dns is true\n");
}

/* ---- the shipped example ---- */

#define EXAMPLE HS_SOURCE_DIR "/deploy/config-example.yaml"

CFG_TEST(example_loads_clean)
{
    cr_assert_eq(config_load(EXAMPLE, CONFIG_FOR_SERVER, &cfg, &diags), 0);
    if (diags.n)
        dump();
    cr_assert_eq(diags.n, 0);
    cr_assert(!cfg.legacy);
}

static void collect(const struct ynode *map, const char *prefix, struct hs_strv *out)
{
    for (const struct ynode *n = map->child; n; n = n->next) {
        char *p = *prefix ? hs_aprintf("%s.%s", prefix, n->key) : hs_strdup(n->key);
        hs_strv_push(out, p);
        if (n->kind == YN_MAP)
            collect(n, p, out);
        free(p);
    }
}

static void ignore_report(void *arg, enum config_diag_level l, const char *k, int line,
                          const char *m)
{
    (void)arg, (void)l, (void)k, (void)line, (void)m;
}

CFG_TEST(example_documents_every_key)
{
    struct ytree t = { 0 };
    struct hs_strv keys = { 0 };
    char *text;
    size_t len;

    cr_assert_eq(hs_read_file(EXAMPLE, CONFIG_MAX_FILE_BYTES, &text, &len), 0);
    cr_assert_eq(ytree_parse(text, len, &t, ignore_report, NULL), 0);
    collect(t.root, "", &keys);
    for (size_t i = 0; i < config__nkeys; i++) {
        const struct key_def *k = &config__keys[i];
        if (k->inert) {
            /* Only what works is set in the example; the rest is listed in a comment. */
            cr_assert(!hs_strv_contains(&keys, k->name), "%s does nothing, yet is set", k->name);
            cr_assert(strstr(text, k->name), "%s is not in the list of inert keys", k->name);
        } else if (k->flags & KF_LEGACY) {
            cr_assert(strstr(text, strrchr(k->name, '.') ? strrchr(k->name, '.') + 1 : k->name),
                      "%s not in the 0.22.3 section", k->name);
        } else {
            cr_assert(hs_strv_contains(&keys, k->name), "%s is not documented", k->name);
        }
    }
    hs_strv_free(&keys);
    ytree_free(&t);
    free(text);
}

/* The commented 0.22.3 section, uncommented, is a working 0.22.3 config. */
CFG_TEST(example_legacy_section_loads)
{
    const char *b, *e;
    struct hs_buf y;
    char *text;
    size_t len;

    cr_assert_eq(hs_read_file(EXAMPLE, CONFIG_MAX_FILE_BYTES, &text, &len), 0);
    cr_assert_not_null(b = strstr(text, "# BEGIN 0.22.3\n"));
    cr_assert_not_null(e = strstr(text, "# END 0.22.3"));
    hs_buf_init(&y, len);
    for (const char *l = b + strlen("# BEGIN 0.22.3\n"); l < e; l = strchr(l, '\n') + 1)
        hs_buf_appendf(&y, "%.*s\n", (int)(strchr(l, '\n') - l - 2), l + 2);
    cr_assert_eq(load(y.data), 0);
    if (diags.n)
        dump();
    cr_assert_eq(diags.n, 0, "the 0.22.3 section sets only keys that work");
    cr_assert(cfg.legacy);
    cr_assert_str_eq(cfg.dns_base_domain, "example.com");
    cr_assert_eq(cfg.oidc_expiry_us, 180 * 86400 * SEC);
    hs_buf_free(&y);
    free(text);
}

/* Every truncation of a real config loads without crashing or leaking. */
CFG_TEST(truncated_input_byte_by_byte)
{
    char *text;
    size_t len;

    cr_assert_eq(hs_read_file(DATA "/legacy-0.22.yaml", CONFIG_MAX_FILE_BYTES, &text, &len), 0);
    for (size_t n = 0; n <= len; n++) {
        config_load_text(text, n, "/etc/hs", CONFIG_FOR_SERVER, &cfg, &diags);
        cr_assert_not_null(cfg.server_url);
        fini();
    }
    free(text);
}

/* ---- the dns.extra_records_path file ---- */

static int records(const char *text, struct dns_record **v, size_t *n, char *err, size_t errsize)
{
    err[0] = '\0';
    return config_dns_records_parse(text, strlen(text), v, n, err, errsize);
}

Test(config, extra_records_file_parses)
{
    struct dns_record *v;
    size_t n;
    char err[256];

    cr_assert_eq(records("[{\"Name\":\"a.example\",\"Type\":\"A\",\"Value\":\"100.64.0.1\"},"
                         " {\"name\":\"b.example\",\"TYPE\":\"aaaa\",\"value\":\"fd7a::1\","
                         "  \"Comment\":\"ignored\"},"
                         " {\"Name\":\"a.example\",\"Type\":\"A\",\"Value\":\"100.64.0.1\"}]",
                         &v, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 2, "the duplicate is dropped");
    cr_expect_str_eq(v[0].name, "a.example");
    cr_expect_str_eq(v[1].name, "b.example");
    cr_expect_str_eq(v[1].type, "aaaa");
    cr_expect_str_eq(v[1].value, "fd7a::1");
    config_dns_records_free(v, n);

    cr_expect_eq(records("[]", &v, &n, err, sizeof(err)), 0, "an empty list clears");
    cr_expect_eq(n, 0);
    config_dns_records_free(v, n);
    cr_expect_eq(records("", &v, &n, err, sizeof(err)), 1, "empty file: being written");
    cr_expect_eq(records("null", &v, &n, err, sizeof(err)), 1);
    cr_expect_null(v);
}

Test(config, extra_records_file_refused)
{
    static const struct {
        const char *text, *needle;
    } bad[] = {
        { "[{\"Name\":\"a\",\"Type\":\"A\",\"Value\":\"100.64.0.1\"}", "not valid JSON" },
        { "{\"Name\":\"a\",\"Type\":\"A\",\"Value\":\"100.64.0.1\"}", "JSON object" },
        { "42", "single value" },
        { "[\"a.example\"]", "record 0 is not an object" },
        { "[{\"Type\":\"A\",\"Value\":\"100.64.0.1\"}]", "needs a Name" },
        { "[{\"Name\":\"\",\"Type\":\"A\",\"Value\":\"100.64.0.1\"}]", "needs a Name" },
        { "[{\"Name\":\"a\",\"Type\":\"CNAME\",\"Value\":\"b\"}]", "must be A or AAAA" },
        { "[{\"Name\":\"a\",\"Type\":\"A\",\"Value\":\"fd7a::1\"}]", "not an IPv4 address" },
        { "[{\"Name\":\"a\",\"Type\":\"AAAA\",\"Value\":\"100.64.0.1\"}]", "not an IPv6" },
        { "[{\"Name\":\"a\",\"Type\":\"A\",\"Value\":\"100.64.0.300\"}]", "not an IPv4" },
        { "[{\"Name\":1,\"Type\":\"A\",\"Value\":\"100.64.0.1\"}]", "must be strings" },
        { "[{\"Name\":\"a\",\"Name\":\"b\",\"Type\":\"A\",\"Value\":\"100.64.0.1\"}]",
          "not valid JSON" },
        { "[{\"Name\":\"ok\",\"Type\":\"A\",\"Value\":\"100.64.0.1\"},{\"Name\":\"x\"}]",
          "record 1" },
    };
    struct dns_record *v = (void *)1;
    size_t n = 7;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(records(bad[i].text, &v, &n, err, sizeof(err)), -EINVAL, "%s", bad[i].text);
        cr_expect(strstr(err, bad[i].needle) != NULL, "%s: %s", bad[i].text, err);
        cr_expect_null(v);
        cr_expect_eq(n, 0);
    }
}

/* headscale passes any nameserver string on; we keep what a client can use and warn about the
 * rest, so a config headscale starts with starts here too. */
CFG_TEST(nameservers_clients_cannot_use)
{
    const struct config_diag *g;

    cr_assert_eq(load("dns:\n  base_domain: x.net\n  nameservers:\n"
                      "    global: [8.8.8.8, not-an-ip, \"1.1.1.1:5353\", \"[fd00::1]:53\","
                      " \"tls://1.1.1.1\", \"http://100.64.0.5:8053/dns-query\"]\n"
                      "    split:\n      corp.example: [nope, 10.0.0.1]\n"), 0);
    cr_assert_eq(cfg.dns_nameservers_global.n, 4);
    cr_expect_str_eq(cfg.dns_nameservers_global.v[1], "1.1.1.1:5353");
    cr_expect_str_eq(cfg.dns_nameservers_global.v[3], "http://100.64.0.5:8053/dns-query");
    cr_assert_not_null(g = find(CONFIG_WARNING, "dns.nameservers.global"));
    cr_expect(strstr(g->msg, "not-an-ip") || strstr(g->msg, "tls://"), "%s", g->msg);
    cr_expect_eq(g->line, 4);
    cr_assert_eq(cfg.dns_nsplit, 1);
    cr_assert_eq(cfg.dns_split[0].nameservers.n, 1);
    cr_expect_str_eq(cfg.dns_split[0].nameservers.v[0], "10.0.0.1");
    cr_expect_eq(count(CONFIG_WARNING), 3);
    fini();

    /* with override_local_dns, nothing usable left is still an error */
    expect_error("dns:\n  base_domain: x.net\n  override_local_dns: true\n  nameservers:\n"
                 "    global: [bogus]\n", "dns.nameservers.global", 0, "at least one");
}

/* ---- DNS settings changed through the API (config_dns_settings_parse) ---- */

static int dns_parse(const char *text, struct dns_settings *out, char *err, size_t errsize)
{
    struct dns_settings base;
    int rc;

    config_dns_settings_of(&cfg, &base);
    err[0] = '\0';
    rc = config_dns_settings_parse(&cfg, &base, text, strlen(text), out, err, errsize);
    config_dns_settings_fini(&base);
    return rc;
}

CFG_TEST(dns_settings_read_and_written)
{
    struct dns_settings d, back;
    char err[512], *text;
    json_t *j;

    cr_assert_eq(load("dns:\n  base_domain: ts.example\n  magic_dns: true\n"
                      "  override_local_dns: false\n"
                      "  nameservers:\n    global: [9.9.9.9]\n  search_domains: [old.example]\n"),
                 0);
    cr_assert_eq(dns_parse("{\"nameservers\":{\"global\":[\"1.1.1.1\",\"[fd00::1]:53\","
                           "\"https://dns.example/q\"],\"split\":{\"corp.example\":"
                           "[\"10.0.0.53\"]}},\"searchDomains\":[\"a.example\",\"_x.b-c.example\"],"
                           "\"extraRecords\":[{\"name\":\"db.ts.example\",\"type\":\"A\","
                           "\"value\":\"100.64.0.9\"}],\"source\":\"config\",\"baseDomain\":"
                           "\"ts.example\",\"updatedAt\":null}",
                           &d, err, sizeof(err)),
                 0, "%s", err);
    cr_expect(d.magic_dns, "left out: the value in force stays");
    cr_expect(!d.override_local_dns);
    cr_assert_eq(d.nameservers.n, 3);
    cr_expect_str_eq(d.nameservers.v[1], "[fd00::1]:53");
    cr_assert_eq(d.nsplit, 1);
    cr_expect_str_eq(d.split[0].domain, "corp.example");
    cr_expect_str_eq(d.split[0].nameservers.v[0], "10.0.0.53");
    cr_assert_eq(d.search_domains.n, 2);
    cr_assert_eq(d.nrecords, 1);
    cr_expect_str_eq(d.records[0].value, "100.64.0.9");

    /* what is stored reads back the same */
    j = config_dns_settings_json(&d);
    text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    cr_assert_eq(dns_parse(text, &back, err, sizeof(err)), 0, "%s", err);
    cr_expect(config_dns_settings_equal(&d, &back));
    free(text);
    config_dns_settings_fini(&back);

    /* null and empty clear; the rest stays */
    cr_assert_eq(dns_parse("{\"nameservers\":null,\"searchDomains\":[],\"magicDns\":false}",
                           &back, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(back.nameservers.n + back.nsplit + back.search_domains.n, 0);
    cr_expect(!back.magic_dns);
    cr_expect(!config_dns_settings_equal(&d, &back));
    config_dns_settings_fini(&back);
    config_dns_settings_fini(&d);
}

CFG_TEST(dns_settings_refused)
{
    static const struct {
        const char *text, *needle;
    } bad[] = {
        { "[]", "expected a JSON object" },
        { "{\"magicDns\":true", "not valid JSON" },
        { "{\"magic_dns\":true}", "unknown member \"magic_dns\"" },
        { "{\"magicDns\":\"yes\"}", "true or false" },
        { "{\"magicDns\":true,\"magicDns\":false}", "not valid JSON" },
        { "{\"baseDomain\":\"other.example\"}", "baseDomain cannot change" },
        { "{\"nameservers\":{\"global\":[\"1.1.1.300\"]}}", "\"1.1.1.300\" is not an IP" },
        { "{\"nameservers\":{\"global\":[\"tls://1.1.1.1\"]}}", "not an IP address" },
        { "{\"nameservers\":{\"global\":[\"1.1.1.1\",\"1.1.1.1\"]}}", "listed twice" },
        { "{\"nameservers\":{\"global\":[5]}}", "entry 0 is not a string" },
        { "{\"nameservers\":{\"global\":\"1.1.1.1\"}}", "must be a list" },
        { "{\"nameservers\":{\"globals\":[]}}", "unknown member \"globals\"" },
        { "{\"nameservers\":{\"split\":{\"corp..example\":[\"10.0.0.1\"]}}}", "not a domain" },
        { "{\"nameservers\":{\"split\":{\"corp.example\":[]}}}", "at least one nameserver" },
        { "{\"nameservers\":{\"split\":[\"corp.example\"]}}", "map domains" },
        { "{\"searchDomains\":[\"-a.example\"]}", "not a domain name" },
        { "{\"searchDomains\":[\"a.example.\"]}", "not a domain name" },
        { "{\"searchDomains\":[\"a b.example\"]}", "not a domain name" },
        { "{\"searchDomains\":[\"<script>.example\"]}", "not a domain name" },
        { "{\"extraRecords\":[{\"name\":\"x\",\"type\":\"A\",\"value\":\"fd7a::1\"}]}",
          "not an IPv4 address" },
        { "{\"extraRecords\":[{\"name\":\"x\",\"type\":\"TXT\",\"value\":\"hi\"}]}",
          "must be A or AAAA" },
        { "{\"extraRecords\":{}}", "must be a list" },
        { "{\"overrideLocalDns\":true,\"nameservers\":{\"global\":[]}}", "at least one" },
    };
    struct dns_settings d = { .magic_dns = true, .nsplit = 77 };
    char err[512];

    cr_assert_eq(load("dns:\n  base_domain: ts.example\n"), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(dns_parse(bad[i].text, &d, err, sizeof(err)), -EINVAL, "%s", bad[i].text);
        cr_expect(strstr(err, bad[i].needle) != NULL, "%s: %s", bad[i].text, err);
        cr_expect_eq(d.nsplit, 77, "untouched on failure");
    }
}

CFG_TEST(dns_settings_limits)
{
    struct dns_settings d = { 0 };
    struct hs_buf b;
    char err[512];

    cr_assert_eq(load("dns:\n  base_domain: ts.example\n"), 0);
    hs_buf_init(&b, 1u << 22);
    hs_buf_puts(&b, "{\"searchDomains\":[");
    for (int i = 0; i <= CONFIG_DNS_MAX_SEARCH; i++)
        hs_buf_appendf(&b, "%s\"d%d.example\"", i ? "," : "", i);
    hs_buf_puts(&b, "]}");
    cr_expect_eq(dns_parse(b.data, &d, err, sizeof(err)), -E2BIG);
    cr_expect(strstr(err, "more than 64") != NULL, "%s", err);
    hs_buf_reset(&b);
    hs_buf_puts(&b, "{\"searchDomains\":[\"");
    while (b.len <= CONFIG_DNS_MAX_BYTES)
        hs_buf_puts(&b, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.");
    hs_buf_puts(&b, "x\"]}");
    cr_expect_eq(dns_parse(b.data, &d, err, sizeof(err)), -E2BIG);
    cr_expect(strstr(err, "larger than") != NULL, "%s", err);
    hs_buf_free(&b);
}

/* Without a base domain there is no MagicDNS; with the records file there are no records to
 * set here; under the 0.22 layout MagicDNS names nodes and stays the file's. */
CFG_TEST_TMP(dns_settings_what_the_file_keeps)
{
    struct dns_settings d;
    char err[512], *path, *text;

    cr_assert_eq(load("server_url: http://127.0.0.1:8080\n"), 0);
    cr_expect_eq(dns_parse("{\"magicDns\":true}", &d, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "dns.base_domain") != NULL, "%s", err);
    fini();
    make_tmp();
    path = put("records.json", "[]");
    text = hs_aprintf("dns:\n  base_domain: ts.example\n  extra_records_path: %s\n", path);
    cr_assert_eq(load(text), 0);
    cr_expect_eq(dns_parse("{\"extraRecords\":[{\"name\":\"a\",\"type\":\"A\",\"value\":"
                           "\"100.64.0.1\"}]}", &d, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "extra_records_path") != NULL, "%s", err);
    cr_expect_eq(dns_parse("{\"extraRecords\":null,\"searchDomains\":[\"a.example\"]}", &d,
                           err, sizeof(err)), 0, "%s", err);
    config_dns_settings_fini(&d);
    free(path);
    free(text);
    fini();
    cr_assert_eq(load("dns_config:\n  base_domain: ts.example\n  magic_dns: true\n"), 0);
    cr_expect_eq(dns_parse("{\"magicDns\":false}", &d, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "0.22") != NULL, "%s", err);
}

/* ---- what a reload compares ---- */

static void add_key(void *arg, const char *key)
{
    hs_strv_push(arg, key);
}

CFG_TEST(each_changed_names_the_keys_that_differ)
{
    static const char a[] = "listen_addr: 127.0.0.1:8080\nlog: {level: info}\n"
                            "dns:\n  extra_records: [{name: a.x.net, type: A, value: 100.64.0.9}]\n";
    static const char b[] = "listen_addr: 127.0.0.1:9090\nlog: {level: debug}\n"
                            "dns:\n  extra_records: [{name: a.x.net, type: A, value: 100.64.0.8}]\n";
    struct hs_config other;
    struct config_diags d2;
    struct hs_strv keys = { 0 };

    cr_assert_eq(load(a), 0);
    cr_assert_eq(config_load_text(b, strlen(b), "/etc/hs", CONFIG_FOR_SERVER, &other, &d2), 0);
    config_each_changed(&cfg, &cfg, add_key, &keys);
    cr_expect_eq(keys.n, 0, "a config differs from itself in %zu keys", keys.n);
    config_each_changed(&cfg, &other, add_key, &keys);
    cr_assert_eq(keys.n, 3);
    cr_expect_str_eq(keys.v[0], "listen_addr");
    cr_expect_str_eq(keys.v[1], "log.level");
    cr_expect_str_eq(keys.v[2], "dns.extra_records");
    hs_strv_free(&keys);
    config_free(&other);
    config_diags_free(&d2);
}

/* ---- no silent keys: every key works or says it does not ---- */

/* The keys that work, each with the test that shows it working ("file::test"). A key added
 * to the table must be put here with its test, or given .inert (and then warns when set):
 * every_key_works_or_warns fails until one or the other is done. */
static const struct {
    const char *key, *test;
} works[] = {
    { "server_url", "tests/unit/test_mapper.c::domain_is_server_url_host" },
    { "listen_addr", "tests/system/test_config.py::test_env_overrides_listen_addr" },
    { "metrics_listen_addr",
      "tests/system/test_metrics.py::test_metrics_families_and_types" },
    { "trusted_proxies",
      "tests/system/test_http_front.py::test_connection_caps_refuse_clearly_while_others_carry_on" },
    { "noise.private_key_path", "tests/system/test_config.py::test_noise_key_generated_private_and_kept" },
    { "private_key_path", "tests/unit/test_config.c::legacy_private_key_is_the_derp_key" },
    { "prefixes.v4", "tests/unit/test_auth.c::config_expiry_prefixes_and_allocation" },
    { "prefixes.v6", "tests/unit/test_auth.c::config_expiry_prefixes_and_allocation" },
    { "prefixes.allocation", "tests/unit/test_auth.c::config_expiry_prefixes_and_allocation" },
    { "ip_prefixes", "tests/system/test_dns.py::test_022_layout_client_shows_dns" },
    { "derp.server.enabled", "tests/system/test_derp_relay.py::test_netcheck_sees_our_stun_and_region" },
    { "derp.server.region_id", "tests/system/test_derp_relay.py::test_netcheck_sees_our_stun_and_region" },
    { "derp.server.region_code", "tests/unit/test_derp.c::embedded_region_from_the_config" },
    { "derp.server.region_name", "tests/system/test_derp_relay.py::test_netcheck_sees_our_stun_and_region" },
    { "derp.server.stun_listen_addr", "tests/system/test_derp_relay.py::test_stun_binding_answer" },
    { "derp.server.private_key_path",
      "tests/system/test_derp_relay.py::test_upgrade_header_carries_the_server_key" },
    { "derp.server.automatically_add_embedded_derp_region",
      "tests/system/test_derp_relay.py::test_real_clients_relay_through_embedded_derp" },
    { "derp.server.ipv4", "tests/unit/test_derp.c::embedded_region_from_the_config" },
    { "derp.server.ipv6", "tests/unit/test_derp.c::embedded_region_from_the_config" },
    { "derp.server.verify_clients", "tests/system/test_derp_relay.py::test_verify_clients_refuses_unknown_keys" },
    { "derp.server.mesh_key_path", "tests/system/test_derp_mesh.py::test_wrong_mesh_key_is_refused" },
    { "derp.server.mesh_with", "tests/system/test_derp_mesh.py::test_packets_cross_the_mesh_both_ways" },
    { "derp.server.mesh_url",
      "tests/system/test_replicas.py::test_behind_nginx_clients_relay_over_the_mesh_and_survive_a_replica" },
    { "derp.urls", "tests/system/test_derp_sources.py::test_unreachable_derp_source_is_retried" },
    { "derp.paths", "tests/system/test_derp_sources.py::test_unreachable_derp_source_is_retried" },
    { "derp.auto_update_enabled", "tests/unit/test_derp.c::refresh_picks_up_changes_and_stops_promptly" },
    { "derp.update_frequency", "tests/unit/test_derp.c::refresh_picks_up_changes_and_stops_promptly" },
    { "node.expiry", "tests/unit/test_auth.c::config_expiry_prefixes_and_allocation" },
    { "node.ephemeral.inactivity_timeout", "tests/system/test_tailnet.py::test_ephemeral_inactivity_deletes_node" },
    { "node.routes.ha.probe_interval",
      "tests/system/test_routes_traffic.py::test_ha_probe_fails_over_a_hung_router" },
    { "node.routes.ha.probe_timeout",
      "tests/system/test_routes_traffic.py::test_ha_probe_fails_over_a_hung_router" },
    { "tls_letsencrypt_hostname", "tests/system/test_acme.py::test_http01_issues_and_a_client_logs_in" },
    { "tls_letsencrypt_challenge_type", "tests/system/test_acme.py::test_tls_alpn01_issues" },
    { "tls_letsencrypt_listen", "tests/system/test_acme.py::test_http01_issues_and_a_client_logs_in" },
    { "tls_letsencrypt_cache_dir", "tests/system/test_acme.py::test_restart_reuses_the_cached_certificate" },
    { "acme_url", "tests/system/test_acme.py::test_unreachable_ca_is_retried" },
    { "acme_email", "tests/system/test_acme.py::test_http01_issues_and_a_client_logs_in" },
    { "database.type", "tests/system/test_config.py::test_legacy_022_config_serves" },
    { "database.debug", "tests/system/test_config.py::test_database_debug_logs_statements" },
    { "database.sqlite.path", "tests/system/test_config.py::test_env_overrides_sqlite_path" },
    { "database.sqlite.write_ahead_log", "tests/unit/test_store.c::wal_follows_the_config" },
    { "database.sqlite.wal_autocheckpoint", "tests/unit/test_store.c::wal_follows_the_config" },
    { "database.postgres.host", "tests/system/test_config.py::test_legacy_022_config_serves" },
    { "database.postgres.port", "tests/system/test_config.py::test_legacy_022_config_serves" },
    { "database.postgres.name", "tests/system/test_config.py::test_legacy_022_config_serves" },
    { "database.postgres.user", "tests/system/test_config.py::test_legacy_022_config_serves" },
    { "database.postgres.pass", "tests/system/test_config.py::test_legacy_022_config_serves" },
    { "database.postgres.ssl", "tests/unit/test_store.c::pool_size_and_ssl_follow_the_config" },
    { "database.postgres.max_open_conns",
      "tests/unit/test_store.c::pool_size_and_ssl_follow_the_config" },
    { "database.postgres.max_idle_conns",
      "tests/unit/test_store.c::idle_connections_follow_the_config" },
    { "database.postgres.conn_max_idle_time_secs",
      "tests/unit/test_store.c::idle_connections_follow_the_config" },
    { "database.postgres.unreachable_timeout",
      "tests/system/test_faults.py::test_postgres_partition_is_noticed_refused_and_healed" },
    { "tls_cert_path", "tests/system/test_derp_relay.py::test_real_clients_relay_through_embedded_derp" },
    { "tls_key_path", "tests/system/test_derp_relay.py::test_real_clients_relay_through_embedded_derp" },
    { "log.level", "tests/system/test_config.py::test_log_level_and_format" },
    { "log.format", "tests/system/test_config.py::test_log_level_and_format" },
    { "policy.mode", "tests/system/test_api_nodes_policy.py::test_policy_file_mode_is_read_only" },
    { "policy.path", "tests/system/test_policy_reload.py::test_sighup_reloads_the_policy_file" },
    { "dns.magic_dns", "tests/system/test_dns.py::test_dns_config_same_as_headscale" },
    { "dns.base_domain", "tests/system/test_dns.py::test_dns_config_same_as_headscale" },
    { "dns.override_local_dns", "tests/unit/test_mapper.c::dns_without_override_or_magic" },
    { "dns.nameservers.global", "tests/system/test_dns.py::test_dns_config_same_as_headscale" },
    { "dns.nameservers.split", "tests/system/test_dns.py::test_dns_config_same_as_headscale" },
    { "dns.search_domains", "tests/system/test_dns.py::test_dns_config_same_as_headscale" },
    { "dns.extra_records", "tests/system/test_dns.py::test_dns_config_same_as_headscale" },
    { "dns.extra_records_path", "tests/system/test_dns.py::test_extra_records_file_edit_reaches_clients" },
    { "dns.use_username_in_magic_dns", "tests/system/test_dns.py::test_022_layout_names_resolve" },
    { "unix_socket", "tests/system/test_api_http.py::test_unix_socket_needs_no_key" },
    { "unix_socket_permission", "tests/system/test_api_http.py::test_unix_socket_permission_setting_is_applied" },
    { "oidc.only_start_if_oidc_is_available", "tests/system/test_oidc.py::test_unreachable_issuer" },
    { "oidc.issuer", "tests/system/test_oidc.py::test_login_through_the_provider" },
    { "oidc.client_id", "tests/system/test_oidc.py::test_login_through_the_provider" },
    { "oidc.client_secret", "tests/system/test_oidc.py::test_stray_and_replayed_callbacks" },
    { "oidc.client_secret_path", "tests/system/test_oidc.py::test_login_through_the_provider" },
    { "oidc.scope", "tests/system/test_oidc.py::test_allowed_lists" },
    { "oidc.extra_params", "tests/system/test_oidc.py::test_login_through_the_provider" },
    { "oidc.allowed_domains", "tests/system/test_oidc.py::test_allowed_lists" },
    { "oidc.allowed_users", "tests/system/test_oidc.py::test_allowed_lists" },
    { "oidc.allowed_groups", "tests/system/test_oidc.py::test_allowed_lists" },
    { "oidc.email_verified_required", "tests/system/test_oidc.py::test_allowed_lists" },
    { "oidc.use_expiry_from_token", "tests/system/test_oidc.py::test_login_through_the_provider" },
    { "oidc.pkce.enabled", "tests/system/test_oidc.py::test_login_through_the_provider" },
    { "oidc.pkce.method", "tests/system/test_oidc.py::test_login_through_the_provider" },
    { "oidc.expiry", "tests/system/test_oidc.py::test_legacy_layout_login" },
    { "oidc.strip_email_domain", "tests/unit/test_mapper.c::fqdn_forms" },
    { "logtail.enabled", "tests/unit/test_mapper.c::config_switches_reach_the_map" },
    { "taildrop.enabled", "tests/unit/test_mapper.c::config_switches_reach_the_map" },
    { "randomize_client_port", "tests/unit/test_mapper.c::config_switches_reach_the_map" },
    { "auto_update.enabled", "tests/unit/test_mapper.c::config_switches_reach_the_map" },
    { "cli.address", "tests/system/test_cli_misc.py::test_remote_mode_users_list" },
    { "cli.api_key", "tests/system/test_cli_misc.py::test_remote_mode_users_list" },
    { "cli.timeout", "tests/system/test_config.py::test_cli_insecure_and_timeout" },
    { "cli.insecure", "tests/system/test_config.py::test_cli_insecure_and_timeout" },
    { "tuning.batch_change_delay",
      "tests/system/test_config.py::test_tuning_keepalive_and_batch_delay" },
    { "tuning.register_cache_expiration",
      "tests/system/test_register_limits.py::test_pending_registrations_expire_on_schedule" },
    { "tuning.register_cache_max_entries",
      "tests/system/test_register_limits.py::test_flood_of_pending_registrations_is_bounded" },
    { "tuning.register_rate_limit",
      "tests/system/test_register_limits.py::test_rate_limit_answers_429_while_a_key_login_still_works" },
    { "tuning.keepalive_interval",
      "tests/system/test_config.py::test_tuning_keepalive_and_batch_delay" },
    { "tuning.map_peer_run", "tests/unit/test_mapper.c::zstd_full_map_from_cached_runs" },
    { "tuning.node_write_interval",
      "tests/system/test_persistence.py::test_reports_are_stored_on_sigterm" },
    { "tuning.http_request_timeout",
      "tests/system/test_http_front.py::test_slow_drip_is_cut_at_the_request_deadline" },
    { "tuning.http_max_connections",
      "tests/system/test_http_front.py::test_connection_caps_refuse_clearly_while_others_carry_on" },
    { "tuning.http_max_connections_per_ip",
      "tests/system/test_http_front.py::test_connection_caps_refuse_clearly_while_others_carry_on" },
    { "tuning.control_max_body_buffer_mib",
      "tests/system/test_limits.py::test_h2_body_budgets_refuse_streams_while_others_carry_on" },
    { "tuning.derp_max_clients",
      "tests/system/test_limits.py::test_derp_client_caps_refuse_clearly_while_others_carry_on" },
    { "tuning.derp_max_clients_per_ip",
      "tests/system/test_limits.py::test_derp_client_caps_refuse_clearly_while_others_carry_on" },
    { "tuning.handshake_rate_limit",
      "tests/system/test_limits.py::test_handshake_rate_limit_refuses_one_address_while_others_carry_on" },
    { "tuning.unreachable_client_timeout",
      "tests/system/test_faults.py::test_half_open_client_is_cut_off_and_offline_for_peers" },
};

static const char *works_test(const char *key)
{
    for (size_t i = 0; i < HS_ARRAY_LEN(works); i++)
        if (strcmp(works[i].key, key) == 0)
            return works[i].test;
    return NULL;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && strcmp(s + n - t, tail) == 0;
}

/* The text defines test name: def name( in Python, CFG_TEST(name) or Test(suite, name...) in C. */
static bool defines(const char *text, const char *name, bool py)
{
    const char *forms[] = { py ? "def %s(" : "(%s)", py ? NULL : ", %s)", py ? NULL : ", %s," };
    bool found = false;

    for (size_t i = 0; i < HS_ARRAY_LEN(forms) && !found; i++) {
        if (!forms[i])
            continue;
        char *f = hs_aprintf(forms[i], name);
        found = strstr(text, f) != NULL;
        free(f);
    }
    return found;
}

/* ref is "file::test"; the file must exist and define that test. */
static void expect_test_exists(const char *key, const char *ref)
{
    const char *sep = strstr(ref, "::");
    char *file, *text;
    size_t len;

    cr_assert_not_null(sep, "%s: \"%s\" is not file::test", key, ref);
    file = hs_aprintf("%s/%.*s", HS_SOURCE_DIR, (int)(sep - ref), ref);
    cr_assert_eq(hs_read_file(file, 4u << 20, &text, &len), 0, "%s: no %s", key, file);
    cr_assert(defines(text, sep + 2, ends_with(file, ".py")), "%s: %s defines no test %s", key,
              file, sep + 2);
    free(text);
    free(file);
}

/* A value other than k's idle one (its default unless .idle says), as YAML. */
static const char *other_value(const struct key_def *k)
{
    const char *idle = k->idle ? k->idle : k->def;
    const struct enum_val *e;

    switch (k->type) {
    case K_BOOL: return idle && strcmp(idle, "true") == 0 ? "false" : "true";
    case K_INT: return "7";
    case K_DUR: return "7s";
    case K_ADDR: return "127.0.0.1:7";
    case K_STR: case K_PATH: case K_PATH_ENV: return "https://seven.example";
    case K_STRV: return "[seven]";
    case K_KV: return "{seven: 7}";
    case K_CHOICE:
        for (e = k->aux; e->name; e++)
            if (strcmp(e->name, idle) != 0)
                return e->name;
        break;
    case K_NOFIELD: return "7";
    default: break;
    }
    cr_assert_fail("%s: no other value for its type; teach other_value()", k->name);
    return NULL;
}

static size_t diags_naming(const char *key, const char *substr)
{
    size_t n = 0;
    for (size_t i = 0; i < diags.n; i++)
        n += hs_streq(diags.v[i].key, key) && (!substr || strstr(diags.v[i].msg, substr));
    return n;
}

/* Set in a file, an inert key earns exactly one warning, naming it, saying it does nothing. */
static void expect_one_warning(const struct key_def *k)
{
    char *text = hs_aprintf("%s: %s\n", k->name, other_value(k));

    load(text);
    if (diags_naming(k->name, "has no effect") != 1 || diags_naming(k->name, NULL) != 1)
        dump();
    cr_assert_eq(diags_naming(k->name, "has no effect"), 1, "%s: no warning when set", k->name);
    cr_assert_eq(diags_naming(k->name, NULL), 1, "%s: more than one message", k->name);
    cr_assert_eq(find(CONFIG_WARNING, k->name)->line, 1);
    fini();
    free(text);
}

CFG_TEST(every_key_works_or_warns)
{
    for (size_t i = 0; i < config__nkeys; i++) {
        const struct key_def *k = &config__keys[i];
        const char *t = works_test(k->name);

        cr_assert(!t || !k->inert, "%s is listed as working but marked inert", k->name);
        cr_assert(t || k->inert, "%s: neither listed as working (with its test) nor inert",
                  k->name);
        if (t)
            expect_test_exists(k->name, t);
        else
            expect_one_warning(k);
    }
    for (size_t i = 0; i < HS_ARRAY_LEN(works); i++) {
        bool alias;
        cr_assert_geq(config__key_find(works[i].key, &alias), 0, "%s is in no table row",
                      works[i].key);
    }
}

/* The same from the environment, and only for serve/configtest, not every CLI command. */
CFG_TEST(inert_key_from_env_warns_for_the_server_only)
{
    setenv("HEADSCALE_TUNING_BATCHER_WORKERS", "7", 1);
    cr_assert_eq(load(""), 0);
    cr_assert_eq(diags_naming("tuning.batcher_workers", "has no effect"), 1);
    cr_assert_eq(find(CONFIG_WARNING, "tuning.batcher_workers")->line, 0);
    fini();
    cr_assert_eq(config_load_text("", 0, NULL, CONFIG_FOR_CLI, &cfg, &diags), 0);
    cr_assert_eq(diags.n, 0);
}

/* Set to the value that asks for nothing more than we do: no warning. */
CFG_TEST(inert_key_at_its_idle_value_is_quiet)
{
    cr_assert_eq(load("acme_url: https://acme-v02.api.letsencrypt.org/directory\n"
                      "disable_check_updates: true\noidc:\n  scope: [openid, profile, email]\n"
                      "  issuer: \"\"\npreauth_keys:\n  revoked_retention: 168h\n"
                      "database:\n  gorm:\n    prepare_stmt: true\n"),
                 0);
    if (diags.n)
        dump();
    cr_assert_eq(diags.n, 0);
    fini();
    cr_assert_eq(load("disable_check_updates: false\n"), 0);
    cr_assert_eq(diags_naming("disable_check_updates", "has no effect: this server never"), 1);
    fini();
    setenv("HEADSCALE_DATABASE_GORM_PARAMETERIZED_QUERIES", "true", 1);
    cr_assert_eq(load("database:\n  gorm:\n    prepare_stmt: false\n"), 0);
    cr_assert_eq(diags.n, 1, "prepare_stmt: false asks for what we never do");
    cr_assert_eq(diags_naming("database.gorm.prepare_stmt", "has no effect"), 1);
}

CFG_TEST(unknown_key_named_once)
{
    cr_assert_eq(load("some_future_key:\n  a: 1\n  b: [2]\nderp:\n  bogus: 1\n"), 0);
    cr_assert_eq(diags.n, 2);
    cr_assert_eq(diags_naming("some_future_key", "unknown key"), 1);
    cr_assert_eq(diags_naming("derp.bogus", "unknown key"), 1);
}

CFG_TEST(unknown_env_variable_named_once)
{
    setenv("HEADSCALE_DNS_BASEDOMAIN", "example.com", 1); /* dns.base_domain, misspelt */
    setenv("HEADSCALE_DNS_BASE_DOMAIN", "example.com", 1);
    setenv("HEADSCALE_DB_PORT", "5433", 1);               /* the 0.22.3 name is a key too */
    setenv("HEADSCALE_CONFIG", "/nonexistent", 1);        /* names the file, read elsewhere */
    cr_assert_eq(load(""), 0);
    if (diags.n != 1)
        dump();
    cr_assert_eq(diags.n, 1);
    cr_assert_eq(diags_naming("HEADSCALE_DNS_BASEDOMAIN", "unknown environment variable"), 1);
    fini();
    cr_assert_eq(config_load_text("", 0, NULL, CONFIG_FOR_CLI, &cfg, &diags), 0);
    cr_assert_eq(diags.n, 0, "CLI commands do not repeat it");
}

/* 0.22.3 used private_key_path for its embedded DERP server too; the relay keeps that key. */
CFG_TEST(legacy_private_key_is_the_derp_key)
{
    cr_assert_eq(load("private_key_path: keys/private.key\n"), 0);
    cr_assert_str_eq(cfg.derp_server_private_key_path, "/etc/hs/keys/private.key");
    fini();
    cr_assert_eq(load("private_key_path: keys/private.key\n"
                      "derp:\n  server:\n    private_key_path: derp.key\n"), 0);
    cr_assert_str_eq(cfg.derp_server_private_key_path, "/etc/hs/derp.key", "explicit key wins");
}
