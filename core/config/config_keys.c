/* config: THE key table, and the parsers that turn a node into a field.
 *
 * Every key headscale main or 0.22.3 reads has one row here. The same row drives file
 * lookup (current and 0.22.3 name), the HEADSCALE_* environment override, the default,
 * unknown-key detection (a key in no row and under no section is unknown), parsing and
 * freeing. Order matters only for K_PREFIXES, which must come after prefixes.v4/v6.
 * A key that does nothing here carries .inert (why) and warns when set; the others are
 * listed with the test that shows them working in tests/unit/test_config.c. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "config/config_internal.h"

_Static_assert(sizeof(enum db_type) == sizeof(int) && sizeof(enum ip_alloc) == sizeof(int) &&
                   sizeof(enum policy_mode) == sizeof(int) &&
                   sizeof(enum log_level) == sizeof(int),
               "K_ENUM and K_LOGLEVEL write enums through int *");

static const struct enum_val db_types[] = {
    { "sqlite", DB_SQLITE }, { "sqlite3", DB_SQLITE }, { "postgres", DB_POSTGRES }, { 0 }
};
static const struct enum_val ip_allocs[] = {
    { "sequential", IP_ALLOC_SEQUENTIAL }, { "random", IP_ALLOC_RANDOM }, { 0 }
};
static const struct enum_val policy_modes[] = {
    { "file", POLICY_MODE_FILE }, { "database", POLICY_MODE_DATABASE }, { 0 }
};
static const struct enum_val challenges[] = { { "HTTP-01", 0 }, { "TLS-ALPN-01", 0 }, { 0 } };
static const struct enum_val pkce_methods[] = { { "S256", 0 }, { "plain", 0 }, { 0 } };
static const struct enum_val sslmodes[] = {
    { "disable", 0 }, { "allow", 0 },     { "prefer", 0 },
    { "require", 0 }, { "verify-ca", 0 }, { "verify-full", 0 }, { 0 }
};
static const int fam4 = AF_INET, fam6 = AF_INET6;

#define F(field) offsetof(struct hs_config, field)
#define KEY(n, t, field, d, ...) { .name = n, .type = t, .off = F(field), .def = d, __VA_ARGS__ }
#define NOFIELD(n, ...) { .name = n, .type = K_NOFIELD, __VA_ARGS__ }
#define INT_MAXV INT32_MAX

/* Why inert keys do nothing (see key_def.inert). */
#define NO_GRPC "gRPC is not served; the CLI uses the unix socket or the REST API"
#define NO_OIDC "oidc.issuer alone turns OIDC on (headscale reads this key only to check pkce.method)"
#define NO_ORM "there is no ORM: statements are always prepared and parameterized"
#define NO_BATCHER "it tunes headscale's Go batcher; here tuning.batch_change_delay does"

const struct key_def config__keys[] = {
    KEY("server_url", K_STR, server_url, "http://127.0.0.1:8080"),
    KEY("listen_addr", K_ADDR, listen_addr, "127.0.0.1:8080"),
    KEY("metrics_listen_addr", K_ADDR, metrics_listen_addr, ""),
    NOFIELD("grpc_listen_addr", .inert = NO_GRPC, .flags = KF_NEVER),
    NOFIELD("grpc_allow_insecure", .inert = NO_GRPC, .flags = KF_NEVER),
    KEY("trusted_proxies", K_CIDRV, trusted_proxies, NULL),
    KEY("noise.private_key_path", K_PATH, noise_private_key_path, "noise_private.key"),
    KEY("private_key_path", K_PATH, legacy_private_key_path, NULL, .flags = KF_LEGACY),

    KEY("prefixes.v4", K_PREFIX, prefix_v4, "100.64.0.0/10", .aux = &fam4),
    KEY("prefixes.v6", K_PREFIX, prefix_v6, "fd7a:115c:a1e0::/48", .aux = &fam6, .legacy_def = ""),
    KEY("prefixes.allocation", K_ENUM, ip_allocation, "sequential", .aux = ip_allocs),
    KEY("ip_prefixes", K_PREFIXES, prefix_v4, NULL, .flags = KF_LEGACY),

    KEY("derp.server.enabled", K_BOOL, derp_server_enabled, "false"),
    KEY("derp.server.region_id", K_INT, derp_server_region_id, "999", .min = 1, .max = INT_MAXV),
    KEY("derp.server.region_code", K_STR, derp_server_region_code, "headscale"),
    KEY("derp.server.region_name", K_STR, derp_server_region_name, "Headscale Embedded DERP"),
    KEY("derp.server.stun_listen_addr", K_ADDR, derp_server_stun_listen_addr, ""),
    KEY("derp.server.private_key_path", K_PATH, derp_server_private_key_path, "derp_server_private.key"),
    KEY("derp.server.automatically_add_embedded_derp_region", K_BOOL, derp_server_auto_add_region, "true"),
    KEY("derp.server.ipv4", K_IP, derp_server_ipv4, "", .aux = &fam4),
    KEY("derp.server.ipv6", K_IP, derp_server_ipv6, "", .aux = &fam6),
    KEY("derp.server.verify_clients", K_BOOL, derp_server_verify_clients, "true"),
    /* Ours, not headscale's: the DERP mesh between replicas (derper's --mesh-psk-file and
     * --mesh-with). */
    KEY("derp.server.mesh_key_path", K_PATH, derp_server_mesh_key_path, ""),
    KEY("derp.server.mesh_with", K_STRV, derp_server_mesh_with, NULL),
    KEY("derp.server.mesh_url", K_STR, derp_server_mesh_url, ""),
    NOFIELD("derp.server.stun.enabled", .flags = KF_NEVER, .idle = "true",
            .inert = "STUN runs whenever the embedded DERP does (headscale ignores the key too)"),
    KEY("derp.urls", K_STRV, derp_urls, NULL),
    KEY("derp.paths", K_PATHV, derp_paths, NULL),
    KEY("derp.auto_update_enabled", K_BOOL, derp_auto_update, "false"), /* headscale: unset */
    KEY("derp.update_frequency", K_DUR, derp_update_frequency_us, "3h", .legacy_def = "24h"),

    KEY("disable_check_updates", K_BOOL, disable_check_updates, "false", .idle = "true",
        .inert = "this server never looks for newer releases", .flags = KF_NEVER),
    KEY("node.expiry", K_DUR, node_expiry_us, "0"),
    KEY("node.ephemeral.inactivity_timeout", K_DUR, ephemeral_inactivity_timeout_us, "120s",
        .legacy = "ephemeral_node_inactivity_timeout"),
    KEY("node.routes.ha.probe_interval", K_DUR, node_routes_ha_probe_interval_us, "10s"),
    KEY("node.routes.ha.probe_timeout", K_DUR, node_routes_ha_probe_timeout_us, "5s"),
    KEY("node_update_check_interval", K_DUR, node_update_check_interval_us, "10s",
        .flags = KF_LEGACY | KF_NEVER, .inert = "changes are pushed to nodes as they happen"),
    KEY("preauth_keys.revoked_retention", K_DUR, preauth_keys_revoked_retention_us, "168h",
        .inert = "revoked pre-auth keys are not deleted automatically"),

    KEY("database.type", K_ENUM, db_type, "sqlite", .legacy = "db_type", .aux = db_types),
    KEY("database.debug", K_BOOL, db_debug, "false"),
    NOFIELD("database.gorm.prepare_stmt", .inert = NO_ORM, .flags = KF_NEVER, .idle = "true"),
    NOFIELD("database.gorm.parameterized_queries", .inert = NO_ORM, .flags = KF_NEVER,
            .idle = "true"),
    NOFIELD("database.gorm.skip_err_record_not_found", .inert = NO_ORM, .flags = KF_NEVER),
    NOFIELD("database.gorm.slow_threshold", .inert = NO_ORM, .flags = KF_NEVER),
    KEY("database.sqlite.path", K_PATH, sqlite_path, "db.sqlite", .legacy = "db_path"),
    KEY("database.sqlite.write_ahead_log", K_BOOL, sqlite_wal, "true"),
    KEY("database.sqlite.wal_autocheckpoint", K_INT, sqlite_wal_autocheckpoint, "1000", .min = -1, .max = INT_MAXV),
    KEY("database.postgres.host", K_STR, pg_host, "", .legacy = "db_host"),
    KEY("database.postgres.port", K_INT, pg_port, "5432", .legacy = "db_port", .min = 1, .max = 65535),
    KEY("database.postgres.name", K_STR, pg_name, "", .legacy = "db_name"),
    KEY("database.postgres.user", K_STR, pg_user, "", .legacy = "db_user"),
    KEY("database.postgres.pass", K_STR, pg_pass, "", .legacy = "db_pass"),
    KEY("database.postgres.ssl", K_SSL, pg_sslmode, "false", .legacy = "db_ssl"),
    KEY("database.postgres.max_open_conns", K_INT, pg_max_open_conns, "10", .min = 1, .max = 100000),
    KEY("database.postgres.max_idle_conns", K_INT, pg_max_idle_conns, "10", .min = 0, .max = 100000),
    KEY("database.postgres.conn_max_idle_time_secs", K_INT, pg_conn_max_idle_time_secs, "3600",
        .min = 0, .max = INT_MAXV),
    KEY("database.postgres.unreachable_timeout", K_DUR, pg_unreachable_timeout_us, "15s"),

    KEY("acme_url", K_STR, acme_url, "https://acme-v02.api.letsencrypt.org/directory"),
    KEY("acme_email", K_STR, acme_email, ""),
    KEY("tls_letsencrypt_hostname", K_STR, tls_letsencrypt_hostname, ""),
    KEY("tls_letsencrypt_cache_dir", K_PATH, tls_letsencrypt_cache_dir, "/var/www/.cache"),
    KEY("tls_letsencrypt_challenge_type", K_CHOICE, tls_letsencrypt_challenge_type, "HTTP-01",
        .aux = challenges),
    KEY("tls_letsencrypt_listen", K_STR, tls_letsencrypt_listen, ":http"),
    KEY("tls_cert_path", K_PATH, tls_cert_path, ""),
    KEY("tls_key_path", K_PATH, tls_key_path, ""),

    KEY("log.level", K_LOGLEVEL, log_level, "info"),
    KEY("log.format", K_LOGFMT, log_json, "text"),

    KEY("policy.mode", K_ENUM, policy_mode, "file", .aux = policy_modes),
    KEY("policy.path", K_PATH, policy_path, "", .legacy = "acl_policy_path"),

    KEY("dns.magic_dns", K_BOOL, dns_magic_dns, "true", .legacy = "dns_config.magic_dns",
        .legacy_def = "false"),
    KEY("dns.base_domain", K_STR, dns_base_domain, "", .legacy = "dns_config.base_domain",
        .legacy_def = "headscale.net"),
    KEY("dns.override_local_dns", K_BOOL, dns_override_local_dns, "true", .legacy = "dns_config.override_local_dns"),
    KEY("dns.nameservers.global", K_NSV, dns_nameservers_global, NULL, .legacy = "dns_config.nameservers"),
    KEY("dns.nameservers.split", K_SPLIT, dns_split, NULL, .legacy = "dns_config.restricted_nameservers"),
    KEY("dns.search_domains", K_STRV, dns_search_domains, NULL, .legacy = "dns_config.domains"),
    KEY("dns.extra_records", K_RECORDS, dns_extra_records, NULL, .legacy = "dns_config.extra_records"),
    KEY("dns.extra_records_path", K_PATH, dns_extra_records_path, ""),
    KEY("dns.use_username_in_magic_dns", K_BOOL, dns_use_username_in_magic_dns, "false",
        .legacy = "dns_config.use_username_in_magic_dns", .legacy_def = "true"),

    KEY("unix_socket", K_STR, unix_socket, "/var/run/headscale/headscale.sock"),
    /* headscale's default text "0o770" fails its own octal parse and falls back to 0700,
     * so 0700 is what its socket really gets (checked with HEADSCALE_DEBUG_DUMP_CONFIG). */
    KEY("unix_socket_permission", K_MODE, unix_socket_permission, "0700"),

    KEY("oidc.only_start_if_oidc_is_available", K_BOOL, oidc_only_start_if_available, "true"),
    KEY("oidc.issuer", K_STR, oidc_issuer, ""),
    KEY("oidc.client_id", K_STR, oidc_client_id, ""),
    KEY("oidc.client_secret", K_STR, oidc_client_secret, ""),
    KEY("oidc.client_secret_path", K_PATH_ENV, oidc_client_secret_path, ""),
    KEY("oidc.scope", K_STRV, oidc_scope, "openid profile email"),
    KEY("oidc.extra_params", K_KV, oidc_extra_params, NULL),
    KEY("oidc.allowed_domains", K_STRV, oidc_allowed_domains, NULL),
    KEY("oidc.allowed_users", K_STRV, oidc_allowed_users, NULL),
    KEY("oidc.allowed_groups", K_STRV, oidc_allowed_groups, NULL),
    KEY("oidc.email_verified_required", K_BOOL, oidc_email_verified_required, "true",
        .legacy_def = "false"),
    KEY("oidc.use_expiry_from_token", K_BOOL, oidc_use_expiry_from_token, "false"),
    KEY("oidc.pkce.enabled", K_BOOL, oidc_pkce_enabled, "false"),
    KEY("oidc.pkce.method", K_CHOICE, oidc_pkce_method, "S256", .aux = pkce_methods),
    KEY("oidc.strip_email_domain", K_BOOL, oidc_strip_email_domain, "false", .legacy_def = "true",
        .flags = KF_LEGACY),
    KEY("oidc.expiry", K_DUR, oidc_expiry_us, "0", .legacy_def = "180d", .flags = KF_LEGACY),
    NOFIELD("oidc.map_legacy_users", .inert = "headscale 0.26 removed it", .flags = KF_NEVER),
    NOFIELD("oidc.enabled", .inert = NO_OIDC, .flags = KF_NEVER),

    KEY("logtail.enabled", K_BOOL, logtail_enabled, "false"),
    KEY("taildrop.enabled", K_BOOL, taildrop_enabled, "true"),
    KEY("auto_update.enabled", K_BOOL, auto_update_enabled, "false"),
    KEY("randomize_client_port", K_BOOL, randomize_client_port, "false"),

    KEY("cli.address", K_STR, cli_address, ""),
    KEY("cli.api_key", K_STR, cli_api_key, ""),
    KEY("cli.timeout", K_DUR, cli_timeout_us, "5s"),
    KEY("cli.insecure", K_BOOL, cli_insecure, "false"),

    KEY("tuning.batch_change_delay", K_DUR, tuning_batch_change_delay_us, "20ms"),
    KEY("tuning.register_cache_expiration", K_DUR, tuning_register_cache_expiration_us, "15m"),
    KEY("tuning.register_cache_max_entries", K_INT, tuning_register_cache_max_entries, "1024", .min = 1, .max = 10000000),
    KEY("tuning.register_rate_limit", K_INT, tuning_register_rate_limit, "20", .min = 0, .max = 1000000),
    KEY("tuning.keepalive_interval", K_DUR, tuning_keepalive_interval_us, "50s"),
    KEY("tuning.map_peer_run", K_INT, tuning_map_peer_run, "256", .min = 2, .max = 65536),
    KEY("tuning.node_write_interval", K_DUR, tuning_node_write_interval_us, "100ms"),
    KEY("tuning.http_request_timeout", K_DUR, tuning_http_request_timeout_us, "30s"),
    KEY("tuning.http_max_connections", K_INT, tuning_http_max_connections, "16384", .min = 1, .max = 1000000),
    KEY("tuning.http_max_connections_per_ip", K_INT, tuning_http_max_connections_per_ip, "256", .min = 0, .max = 1000000),
    KEY("tuning.handshake_rate_limit", K_INT, tuning_handshake_rate_limit, "600", .min = 0, .max = 1000000),
    KEY("tuning.derp_max_clients", K_INT, tuning_derp_max_clients, "65536", .min = 1, .max = 10000000),
    KEY("tuning.control_max_body_buffer_mib", K_INT, tuning_control_max_body_buffer_mib, "256", .min = 1, .max = 1048576),
    KEY("tuning.derp_max_clients_per_ip", K_INT, tuning_derp_max_clients_per_ip, "256", .min = 0, .max = 10000000),
    KEY("tuning.unreachable_client_timeout", K_DUR, tuning_unreachable_client_timeout_us, "60s"),
    NOFIELD("tuning.notifier_send_timeout", .inert = NO_BATCHER, .flags = KF_NEVER),
    NOFIELD("tuning.node_mapsession_buffered_chan_size", .inert = NO_BATCHER, .flags = KF_NEVER),
    NOFIELD("tuning.batcher_workers", .inert = NO_BATCHER, .flags = KF_NEVER),
    NOFIELD("tuning.node_store_batch_size", .inert = NO_BATCHER, .flags = KF_NEVER),
    NOFIELD("tuning.node_store_batch_timeout", .inert = NO_BATCHER, .flags = KF_NEVER),
};
const size_t config__nkeys = HS_ARRAY_LEN(config__keys);

/* ---- lookup ---- */

int config__key_find(const char *name, bool *is_legacy)
{
    for (size_t i = 0; i < config__nkeys; i++) {
        if (strcasecmp(config__keys[i].name, name) == 0) {
            *is_legacy = false;
            return (int)i;
        }
        if (config__keys[i].legacy && strcasecmp(config__keys[i].legacy, name) == 0) {
            *is_legacy = true;
            return (int)i;
        }
    }
    return -1;
}

static bool below(const char *key, const char *section, size_t n)
{
    return key && strncasecmp(key, section, n) == 0 && key[n] == '.';
}

bool config__is_section(const char *name)
{
    size_t n = strlen(name);

    for (size_t i = 0; i < config__nkeys; i++)
        if (below(config__keys[i].name, name, n) || below(config__keys[i].legacy, name, n))
            return true;
    return false;
}

/* ---- diagnostics for the key being applied ---- */

static int bad(struct load_ctx *c, const struct ynode *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(struct load_ctx *c, const struct ynode *n, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->cur_env)
        config__diag(c, CONFIG_ERROR, c->cur_name, 0, "%s (from $%s)", msg, c->cur_env);
    else
        config__diag(c, CONFIG_ERROR, c->cur_name, n ? ynode_line(n) : 0, "%s", msg);
    return -EINVAL;
}

static const char *kind_name(enum ynode_kind k)
{
    return k == YN_MAP ? "a mapping" : k == YN_SEQ ? "a list" : "a single value";
}

static const char *scalar(struct load_ctx *c, const struct ynode *n)
{
    if (n->kind != YN_SCALAR) {
        bad(c, n, "expected a single value, got %s", kind_name(n->kind));
        return NULL;
    }
    return n->str;
}

static void set_str(void *field, char *s)
{
    char **p = field;
    free(*p);
    *p = s;
}

/* ---- scalar parsers ---- */

static int check_addr(struct load_ctx *c, const struct ynode *n, const char *s)
{
    const char *colon = strrchr(s, ':');
    uint64_t port;

    if (!*s)
        return 0; /* empty disables the listener */
    if (!colon || hs_parse_u64(colon + 1, 65535, &port) < 0 || port == 0)
        return bad(c, n, "must be host:port with a port between 1 and 65535, got \"%.64s\"", s);
    if (memchr(s, ':', (size_t)(colon - s)) && (s[0] != '[' || colon[-1] != ']'))
        return bad(c, n, "an IPv6 host must be in brackets ([::]:8080), got \"%.64s\"", s);
    return 0;
}

/* $VAR and ${VAR} from the environment, as Go's os.ExpandEnv (unset → empty). */
static char *expand_env(const char *s)
{
    struct hs_buf b;

    hs_buf_init(&b, 4096);
    hs_buf_append(&b, "", 0);
    while (*s) {
        size_t n = strcspn(s, "$");
        hs_buf_append(&b, s, n);
        s += n;
        if (!*s)
            break;
        bool brace = s[1] == '{';
        const char *name = s + 1 + brace;
        size_t len = strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");
        if (!len || (brace && name[len] != '}')) {
            hs_buf_append(&b, s, 1);
            s++;
            continue;
        }
        char *var = hs_strndup(name, len);
        const char *val = getenv(var);
        free(var);
        if (val)
            hs_buf_puts(&b, val);
        s = name + len + brace;
    }
    return hs_buf_steal(&b);
}

static char *resolve_path(const struct load_ctx *c, const char *s, bool is_default)
{
    const char *base = c->cfg->dir;

    if (!base && is_default)
        base = "/var/lib/headscale"; /* no config file: where the packages keep state */
    if (!*s || s[0] == '/' || !base)
        return hs_strdup(s);
    return hs_aprintf("%s/%s", base, s);
}

static int apply_string(struct load_ctx *c, const struct key_def *k, const struct ynode *n,
                        void *field)
{
    const char *s = scalar(c, n);
    char *v;

    if (!s)
        return -EINVAL;
    if (k->type == K_ADDR && check_addr(c, n, s) < 0)
        return -EINVAL;
    if (k->type == K_PATH_ENV) {
        char *e = expand_env(s);
        v = resolve_path(c, e, n->line == 0 && !c->cur_env);
        free(e);
    } else if (k->type == K_PATH) {
        v = resolve_path(c, s, n->line == 0 && !c->cur_env);
    } else {
        v = hs_strdup(s);
    }
    set_str(field, v);
    return 0;
}

static int apply_bool(struct load_ctx *c, const struct ynode *n, bool *field)
{
    const char *s = scalar(c, n);

    if (!s)
        return -EINVAL;
    if (hs_parse_bool(s, field) < 0)
        return bad(c, n, "must be true or false, got \"%.64s\"", s);
    return 0;
}

static int apply_int(struct load_ctx *c, const struct key_def *k, const struct ynode *n,
                     int *field)
{
    const char *s = scalar(c, n);
    int64_t v;

    if (!s)
        return -EINVAL;
    if (hs_parse_i64(s, &v) < 0 || v < k->min || v > k->max)
        return bad(c, n, "must be a number between %lld and %lld, got \"%.64s\"",
                   (long long)k->min, (long long)k->max, s);
    *field = (int)v;
    return 0;
}

static int apply_dur(struct load_ctx *c, const struct ynode *n, int64_t *field)
{
    const char *s = scalar(c, n);

    if (!s)
        return -EINVAL;
    if (hs_parse_duration(s, field) < 0)
        return bad(c, n, "must be a duration such as 30s, 15m, 1h30m or 90d, got \"%.64s\"", s);
    return 0;
}

/* "0770", "0o770", "770" and a YAML int 0770 all mean rwxrwx---: headscale parses the text
 * as octal, so we do too. */
static int apply_mode(struct load_ctx *c, const struct ynode *n, unsigned *field)
{
    const char *s = scalar(c, n), *p;
    unsigned v = 0;

    if (!s)
        return -EINVAL;
    p = (s[0] == '0' && (s[1] == 'o' || s[1] == 'O')) ? s + 2 : s;
    if (!*p || strspn(p, "01234567") != strlen(p) || strlen(p) > 5)
        return bad(c, n, "must be an octal file mode such as \"0770\", got \"%.64s\"", s);
    for (; *p; p++)
        v = v * 8 + (unsigned)(*p - '0');
    if (v > 07777)
        return bad(c, n, "must be an octal file mode such as \"0770\", got \"%.64s\"", s);
    *field = v;
    return 0;
}

static const struct enum_val *choose(struct load_ctx *c, const struct ynode *n,
                                     const struct enum_val *vals, const char *s)
{
    char list[256] = "";
    size_t len = 0;

    for (const struct enum_val *e = vals; e->name; e++)
        if (strcasecmp(e->name, s) == 0)
            return e;
    for (const struct enum_val *e = vals; e->name && len < sizeof(list); e++)
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", len ? ", " : "", e->name);
    bad(c, n, "must be one of %s, got \"%.64s\"", list, s);
    return NULL;
}

static int apply_enum(struct load_ctx *c, const struct key_def *k, const struct ynode *n,
                      void *field)
{
    const struct enum_val *vals = k->aux, *e;
    const char *s = scalar(c, n);

    if (!s || !(e = choose(c, n, vals, s)))
        return -EINVAL;
    if (k->type == K_ENUM)
        *(int *)field = e->val;
    else
        set_str(field, hs_strdup(e->name));
    return 0;
}

static int apply_loglevel(struct load_ctx *c, const struct ynode *n, enum log_level *field)
{
    const char *s = scalar(c, n);

    if (!s)
        return -EINVAL;
    if (log_parse_level(s, field) < 0)
        return bad(c, n, "must be one of trace, debug, info, warn, error, fatal, panic, "
                         "disabled, got \"%.64s\"", s);
    return 0;
}

static int apply_logfmt(struct load_ctx *c, const struct ynode *n, bool *json)
{
    const char *s = scalar(c, n);

    if (!s)
        return -EINVAL;
    if (strcasecmp(s, "text") && strcasecmp(s, "json"))
        return bad(c, n, "must be one of text, json, got \"%.64s\"", s);
    *json = strcasecmp(s, "json") == 0;
    return 0;
}

/* headscale: a boolean (true → "require"), or an explicit libpq sslmode. */
static int apply_ssl(struct load_ctx *c, const struct ynode *n, char **field)
{
    const char *s = scalar(c, n);
    const struct enum_val *e;
    bool on;

    if (!s)
        return -EINVAL;
    if (hs_parse_bool(s, &on) == 0) {
        set_str(field, hs_strdup(on ? "require" : "disable"));
        return 0;
    }
    if (!(e = choose(c, n, sslmodes, s)))
        return -EINVAL;
    set_str(field, hs_strdup(e->name));
    return 0;
}

static int apply_ip(struct load_ctx *c, const struct key_def *k, const struct ynode *n,
                    char **field)
{
    int fam = *(const int *)k->aux;
    const char *s = scalar(c, n);
    uint8_t addr[16];

    if (!s)
        return -EINVAL;
    if (*s && config__parse_ip(s, fam, addr) < 0)
        return bad(c, n, "must be an IPv%d address, got \"%.64s\"", fam == AF_INET ? 4 : 6, s);
    set_str(field, hs_strdup(s));
    return 0;
}

static int parse_prefix_of(struct load_ctx *c, const struct ynode *n, const char *s, int fam,
                           struct ip_prefix *out)
{
    struct ip_prefix p;

    if (config_parse_prefix(s, &p) < 0)
        return bad(c, n, "must be an IP prefix with no host bits set, such as "
                         "100.64.0.0/10, got \"%.64s\"", s);
    if (fam && p.family != fam)
        return bad(c, n, "\"%.64s\" is an IPv%d prefix; an IPv%d one is needed here", s,
                   p.family == AF_INET ? 4 : 6, fam == AF_INET ? 4 : 6);
    *out = p;
    return 0;
}

static int apply_prefix(struct load_ctx *c, const struct key_def *k, const struct ynode *n,
                        struct ip_prefix *field)
{
    const char *s = scalar(c, n);

    if (!s)
        return -EINVAL;
    if (!*s) {
        *field = (struct ip_prefix){ 0 }; /* "" disables this family */
        return 0;
    }
    return parse_prefix_of(c, n, s, *(const int *)k->aux, field);
}

/* ---- lists ---- */

/* Calls fn for every item: a YAML list of values, or one value split on whitespace (what
 * viper does for env values and for a plain string given to a list key). */
typedef int (*item_fn)(struct load_ctx *c, const struct ynode *n, const char *s, void *arg);

static int each_item(struct load_ctx *c, const struct ynode *n, item_fn fn, void *arg)
{
    int rc = 0;

    if (n->kind == YN_MAP)
        return bad(c, n, "expected a list, got a mapping");
    if (n->kind == YN_SCALAR) {
        struct hs_strv parts = { 0 };
        hs_strv_split(&parts, n->str, " \t\n");
        for (size_t i = 0; i < parts.n && rc == 0; i++)
            rc = fn(c, n, parts.v[i], arg);
        hs_strv_free(&parts);
        return rc;
    }
    for (const struct ynode *it = n->child; it && rc == 0; it = it->next) {
        if (it->kind != YN_SCALAR)
            rc = bad(c, it, "list items must be single values, got %s", kind_name(it->kind));
        else if (!it->null)
            rc = fn(c, it, it->str, arg);
    }
    return rc;
}

struct list_arg {
    const struct key_def *k;
    struct hs_strv out;
};

bool config__is_nameserver(const char *s)
{
    char host[64], port[16];
    uint8_t a[16];
    char *end;

    if (config__parse_ip(s, 0, a) > 0 || hs_has_prefix(s, "https://") ||
        hs_has_prefix(s, "http://"))
        return true;
    if (hs_split_host_port(s, host, sizeof(host), port, sizeof(port)) < 0 ||
        config__parse_ip(host, 0, a) <= 0)
        return false;
    unsigned long p = strtoul(port, &end, 10);
    return *end == '\0' && p > 0 && p <= 65535;
}

static int list_item(struct load_ctx *c, const struct ynode *n, const char *s, void *arg)
{
    struct list_arg *la = arg;
    struct ip_prefix p;
    uint8_t a[16];
    char *v;

    switch (la->k->type) {
    case K_NSV:
        /* headscale passes any string on; a client drops what it cannot use. Say so, and
         * leave it out, rather than refuse a config headscale starts with. */
        if (!config__is_nameserver(s)) {
            config__diag(c, CONFIG_WARNING, c->cur_name, c->cur_env ? 0 : ynode_line(n),
                         "\"%.64s\" is not an IP address, IP:port or http(s):// URL: left out "
                         "(clients could not use it)", s);
            return 0;
        }
        break;
    case K_CIDRV:
        if (config__parse_ip(s, 0, a) <= 0 && config_parse_prefix(s, &p) < 0)
            return bad(c, n, "\"%.64s\" is not an IP address or prefix", s);
        if (strstr(s, "/0") && config_parse_prefix(s, &p) == 0 && p.bits == 0)
            return bad(c, n, "\"%.64s\" would trust every address", s);
        break;
    default:
        break;
    }
    v = la->k->type == K_PATHV ? resolve_path(c, s, false) : hs_strdup(s);
    hs_strv_push(&la->out, v);
    free(v);
    return 0;
}

static int apply_list(struct load_ctx *c, const struct key_def *k, const struct ynode *n,
                      struct hs_strv *field)
{
    struct list_arg la = { .k = k };

    if (each_item(c, n, list_item, &la) < 0) {
        hs_strv_free(&la.out);
        return -EINVAL;
    }
    hs_strv_free(field);
    *field = la.out;
    return 0;
}

/* 0.22 ip_prefixes: one list for both families. */
struct prefixes_arg {
    struct ip_prefix v4, v6;
};

static int prefixes_item(struct load_ctx *c, const struct ynode *n, const char *s, void *arg)
{
    struct prefixes_arg *pa = arg;
    struct ip_prefix p;

    if (parse_prefix_of(c, n, s, 0, &p) < 0)
        return -EINVAL;
    struct ip_prefix *slot = p.family == AF_INET ? &pa->v4 : &pa->v6;
    if (slot->family) {
        config__diag(c, CONFIG_WARNING, c->cur_name, ynode_line(n),
                     "only one IPv%d prefix is used; ignoring %s", p.family == AF_INET ? 4 : 6,
                     p.text);
        return 0;
    }
    *slot = p;
    return 0;
}

static bool explicitly_set(const struct load_ctx *c, const char *name)
{
    bool leg;
    int i = config__key_find(name, &leg);
    return i >= 0 && c->src[i] != SRC_DEFAULT;
}

static int apply_prefixes(struct load_ctx *c, const struct ynode *n)
{
    struct prefixes_arg pa = { 0 };

    if (explicitly_set(c, "prefixes.v4") || explicitly_set(c, "prefixes.v6")) {
        config__diag(c, CONFIG_WARNING, c->cur_name, c->cur_env ? 0 : ynode_line(n),
                     "ignored because prefixes.v4/prefixes.v6 are set");
        return 0;
    }
    if (each_item(c, n, prefixes_item, &pa) < 0)
        return -EINVAL;
    if (!pa.v4.family && !pa.v6.family)
        return bad(c, n, "needs at least one prefix");
    c->cfg->prefix_v4 = pa.v4;
    c->cfg->prefix_v6 = pa.v6;
    return 0;
}

/* ---- mappings ---- */

static void free_split(struct dns_split *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].domain);
        hs_strv_free(&v[i].nameservers);
    }
    free(v);
}

static int apply_split(struct load_ctx *c, const struct ynode *n)
{
    struct dns_split *v;
    size_t cnt = 0;

    if (n->kind != YN_MAP)
        return bad(c, n, "expected a mapping of domain: [nameservers], got %s", kind_name(n->kind));
    v = hs_xcalloc(n->nchild, sizeof(*v));
    for (const struct ynode *d = n->child; d; d = d->next) {
        struct list_arg la = { .k = &(struct key_def){ .type = K_NSV } };
        if (d->null)
            continue;
        if (each_item(c, d, list_item, &la) < 0) {
            hs_strv_free(&la.out);
            free_split(v, cnt);
            return -EINVAL;
        }
        v[cnt].domain = hs_strdup(d->key);
        v[cnt++].nameservers = la.out;
    }
    free_split(c->cfg->dns_split, c->cfg->dns_nsplit);
    c->cfg->dns_split = v;
    c->cfg->dns_nsplit = cnt;
    return 0;
}

static void free_records(struct dns_record *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].type);
        free(v[i].value);
    }
    free(v);
}

static int record_check(struct load_ctx *c, const struct ynode *e, const struct dns_record *r)
{
    uint8_t a[16];
    int fam;

    if (!r->name || !*r->name || !r->type || !r->value)
        return bad(c, e, "each record needs name, type and value");
    if (strcasecmp(r->type, "A") && strcasecmp(r->type, "AAAA"))
        return bad(c, e, "record type must be A or AAAA, got \"%.16s\"", r->type);
    fam = strcasecmp(r->type, "A") == 0 ? AF_INET : AF_INET6;
    if (config__parse_ip(r->value, fam, a) < 0)
        return bad(c, e, "\"%.64s\" is not an IPv%d address", r->value, fam == AF_INET ? 4 : 6);
    return 0;
}

static int record_parse(struct load_ctx *c, const struct ynode *e, struct dns_record *r)
{
    if (e->kind != YN_MAP)
        return bad(c, e, "each record must be a mapping {name, type, value}, got %s",
                   kind_name(e->kind));
    for (const struct ynode *f = e->child; f; f = f->next) {
        char **slot = !strcasecmp(f->key, "name")    ? &r->name
                      : !strcasecmp(f->key, "type")  ? &r->type
                      : !strcasecmp(f->key, "value") ? &r->value
                                                     : NULL;
        if (!slot) {
            config__diag(c, CONFIG_WARNING, c->cur_name, f->key_line,
                         "unknown record field \"%.64s\"", f->key);
            continue;
        }
        if (f->kind != YN_SCALAR)
            return bad(c, f, "record field %s must be a single value", f->key);
        set_str(slot, hs_strdup(f->str));
    }
    return record_check(c, e, r);
}

static int apply_records(struct load_ctx *c, const struct ynode *n)
{
    struct dns_record *v;
    size_t cnt = 0;

    if (n->kind != YN_SEQ)
        return bad(c, n, "expected a list of {name, type, value}, got %s", kind_name(n->kind));
    v = hs_xcalloc(n->nchild, sizeof(*v));
    for (const struct ynode *e = n->child; e; e = e->next) {
        if (record_parse(c, e, &v[cnt++]) < 0) {
            free_records(v, cnt);
            return -EINVAL;
        }
    }
    free_records(c->cfg->dns_extra_records, c->cfg->dns_nextra_records);
    c->cfg->dns_extra_records = v;
    c->cfg->dns_nextra_records = cnt;
    return 0;
}

static int apply_kv(struct load_ctx *c, const struct ynode *n, struct hs_strv *field)
{
    struct hs_strv out = { 0 };

    if (n->kind != YN_MAP)
        return bad(c, n, "expected a mapping of name: value, got %s", kind_name(n->kind));
    for (const struct ynode *e = n->child; e; e = e->next) {
        if (e->kind != YN_SCALAR) {
            hs_strv_free(&out);
            return bad(c, e, "%s must be a single value, got %s", e->key, kind_name(e->kind));
        }
        char *kv = hs_aprintf("%s=%s", e->key, e->str);
        hs_strv_push(&out, kv);
        free(kv);
    }
    hs_strv_free(field);
    *field = out;
    return 0;
}

/* ---- dispatch ---- */

int config__apply(struct load_ctx *c, const struct key_def *k, const struct ynode *n)
{
    void *f = (char *)c->cfg + k->off;

    switch (k->type) {
    case K_STR: case K_PATH: case K_PATH_ENV: case K_ADDR:
        return apply_string(c, k, n, f);
    case K_BOOL: return apply_bool(c, n, f);
    case K_INT: return apply_int(c, k, n, f);
    case K_DUR: return apply_dur(c, n, f);
    case K_MODE: return apply_mode(c, n, f);
    case K_ENUM: case K_CHOICE: return apply_enum(c, k, n, f);
    case K_LOGLEVEL: return apply_loglevel(c, n, f);
    case K_LOGFMT: return apply_logfmt(c, n, f);
    case K_SSL: return apply_ssl(c, n, f);
    case K_IP: return apply_ip(c, k, n, f);
    case K_PREFIX: return apply_prefix(c, k, n, f);
    case K_PREFIXES: return apply_prefixes(c, n);
    case K_STRV: case K_PATHV: case K_NSV: case K_CIDRV: return apply_list(c, k, n, f);
    case K_SPLIT: return apply_split(c, n);
    case K_RECORDS: return apply_records(c, n);
    case K_KV: return apply_kv(c, n, f);
    case K_NOFIELD: return 0; /* config__warn_inert says so */
    }
    return -EINVAL;
}

static bool str_equal(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

bool config__field_equal(const struct key_def *k, const struct hs_config *a,
                         const struct hs_config *b)
{
    const void *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;

    switch (k->type) {
    case K_STR: case K_PATH: case K_PATH_ENV: case K_ADDR: case K_CHOICE: case K_SSL: case K_IP:
        return str_equal(*(char *const *)fa, *(char *const *)fb);
    case K_STRV: case K_PATHV: case K_NSV: case K_CIDRV: case K_KV:
        return hs_strv_equal(fa, fb);
    case K_BOOL: case K_LOGFMT:
        return *(const bool *)fa == *(const bool *)fb;
    case K_INT: case K_ENUM: case K_LOGLEVEL:
        return *(const int *)fa == *(const int *)fb;
    case K_MODE:
        return *(const unsigned *)fa == *(const unsigned *)fb;
    case K_DUR:
        return *(const int64_t *)fa == *(const int64_t *)fb;
    case K_PREFIX:
        return memcmp(fa, fb, sizeof(struct ip_prefix)) == 0;
    default:
        return false; /* compound values and K_NOFIELD: treated as changed */
    }
}

void config__free_fields(struct hs_config *cfg)
{
    for (size_t i = 0; i < config__nkeys; i++) {
        const struct key_def *k = &config__keys[i];
        void *f = (char *)cfg + k->off;

        switch (k->type) {
        case K_STR: case K_PATH: case K_PATH_ENV: case K_ADDR: case K_CHOICE: case K_SSL:
        case K_IP:
            set_str(f, NULL);
            break;
        case K_STRV: case K_PATHV: case K_NSV: case K_CIDRV: case K_KV:
            hs_strv_free(f);
            break;
        case K_SPLIT:
            free_split(cfg->dns_split, cfg->dns_nsplit);
            cfg->dns_split = NULL;
            cfg->dns_nsplit = 0;
            break;
        case K_RECORDS:
            free_records(cfg->dns_extra_records, cfg->dns_nextra_records);
            cfg->dns_extra_records = NULL;
            cfg->dns_nextra_records = 0;
            break;
        default:
            break;
        }
    }
}
