/* config: IP/prefix parsing and the checks that involve more than one key (headscale's
 * validateServerConfig and friends). Each problem names the key it is about and, when the
 * value came from the file, that key's line. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "config/config_internal.h"

#define MIN_EPHEMERAL_TIMEOUT_US (65 * HS_USEC_PER_SEC) /* headscale: must be > 65 s */

int config__parse_ip(const char *s, int family, uint8_t out[16])
{
    memset(out, 0, 16);
    if ((family == 0 || family == AF_INET) && inet_pton(AF_INET, s, out) == 1)
        return AF_INET;
    if ((family == 0 || family == AF_INET6) && inet_pton(AF_INET6, s, out) == 1)
        return AF_INET6;
    return -EINVAL;
}

int config_parse_prefix(const char *s, struct ip_prefix *out)
{
    char addr[INET6_ADDRSTRLEN + 1], text[INET6_ADDRSTRLEN];
    const char *slash = s ? strchr(s, '/') : NULL;
    struct ip_prefix p = { 0 };
    uint64_t bits;
    size_t alen;

    if (!slash || (alen = (size_t)(slash - s)) >= sizeof(addr))
        return -EINVAL;
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    if ((p.family = config__parse_ip(addr, 0, p.addr)) < 0)
        return -EINVAL;
    if (hs_parse_u64(slash + 1, p.family == AF_INET ? 32 : 128, &bits) < 0)
        return -EINVAL;
    p.bits = (uint8_t)bits;
    for (unsigned i = p.bits; i < (p.family == AF_INET ? 32u : 128u); i++)
        if (p.addr[i / 8] & (0x80 >> (i % 8)))
            return -EINVAL; /* host bits set: 100.64.0.1/10 is not a network */
    inet_ntop(p.family, p.addr, text, sizeof(text));
    snprintf(p.text, sizeof(p.text), "%s/%u", text, p.bits);
    *out = p;
    return 0;
}

static bool prefix_within(const struct ip_prefix *inner, const char *outer_text)
{
    struct ip_prefix outer;

    if (config_parse_prefix(outer_text, &outer) < 0 || inner->family != outer.family ||
        inner->bits < outer.bits)
        return false;
    for (unsigned i = 0; i < outer.bits; i++) {
        unsigned mask = 0x80u >> (i % 8);
        if ((inner->addr[i / 8] & mask) != (outer.addr[i / 8] & mask))
            return false;
    }
    return true;
}

/* ---- helpers naming a key ---- */

static int key_index(const char *name)
{
    bool alias;
    return config__key_find(name, &alias);
}

static bool is_set(const struct load_ctx *c, const char *name)
{
    int i = key_index(name);
    return i >= 0 && c->src[i] != SRC_DEFAULT;
}

static void problem(struct load_ctx *c, enum config_diag_level lvl, const char *name,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void problem(struct load_ctx *c, enum config_diag_level lvl, const char *name,
                    const char *fmt, ...)
{
    int i = key_index(name);
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* Name the key the way the file spelled it (db_port, not database.postgres.port). */
    config__diag(c, lvl, i >= 0 && c->used_name[i] ? c->used_name[i] : name,
                 i >= 0 ? c->line[i] : 0, "%s", msg);
}

/* ---- the checks ---- */

/* Host part of http(s)://host[:port]/...; false if the URL has none. */
static bool url_host(const char *url, char *out, size_t size)
{
    const char *h = strstr(url, "://"), *end;
    size_t n;

    if (!h)
        return false;
    h += 3;
    if (*h == '[') {
        end = strchr(h, ']');
        end = end ? end + 1 : h + strlen(h);
    } else {
        end = h + strcspn(h, ":/?#");
    }
    n = (size_t)(end - h);
    if (n == 0 || n >= size)
        return false;
    memcpy(out, h, n);
    out[n] = '\0';
    return true;
}

static void check_server_url(struct load_ctx *c)
{
    const struct hs_config *cfg = c->cfg;
    const char *bd = cfg->dns_base_domain;
    char host[256];
    size_t hl, bl;

    if (!hs_has_prefix(cfg->server_url, "http://") && !hs_has_prefix(cfg->server_url, "https://")) {
        problem(c, CONFIG_ERROR, "server_url", "must start with http:// or https://, got \"%.64s\"",
                cfg->server_url);
        return;
    }
    if (!url_host(cfg->server_url, host, sizeof(host))) {
        problem(c, CONFIG_ERROR, "server_url", "has no host: \"%.64s\"", cfg->server_url);
        return;
    }
    if (!*bd)
        return;
    hl = strlen(host);
    bl = strlen(bd);
    if (strcasecmp(host, bd) == 0 ||
        (hl > bl && host[hl - bl - 1] == '.' && strcasecmp(host + hl - bl, bd) == 0))
        /* 0.22 configs often did this and names were <node>.<user>.<base_domain>, so an
         * old layout only gets a warning; headscale 0.23+ refuses to start. */
        problem(c, c->cfg->legacy ? CONFIG_WARNING : CONFIG_ERROR, "server_url",
                "host %s must not be dns.base_domain (%s) or a subdomain of it: MagicDNS "
                "names would shadow the server", host, bd);
}

static void check_prefixes(struct load_ctx *c)
{
    const struct hs_config *cfg = c->cfg;

    if (!cfg->prefix_v4.family && !cfg->prefix_v6.family) {
        problem(c, CONFIG_ERROR, "prefixes.v4", "at least one of prefixes.v4 and prefixes.v6 "
                                                "is needed");
        return;
    }
    if (cfg->prefix_v4.family && !prefix_within(&cfg->prefix_v4, "100.64.0.0/10"))
        problem(c, CONFIG_WARNING, is_set(c, "prefixes.v4") ? "prefixes.v4" : "ip_prefixes",
                "%s is outside 100.64.0.0/10 (CGNAT); Tailscale clients may misbehave",
                cfg->prefix_v4.text);
    if (cfg->prefix_v6.family && !prefix_within(&cfg->prefix_v6, "fd7a:115c:a1e0::/48"))
        problem(c, CONFIG_WARNING, is_set(c, "prefixes.v6") ? "prefixes.v6" : "ip_prefixes",
                "%s is outside fd7a:115c:a1e0::/48; Tailscale clients may misbehave",
                cfg->prefix_v6.text);
}

static void check_dns(struct load_ctx *c)
{
    const struct hs_config *cfg = c->cfg;

    if (cfg->dns_magic_dns && !*cfg->dns_base_domain) {
        /* headscale refuses a bare config here; we switch MagicDNS off unless it was asked
         * for, so a config with no dns section still starts. */
        if (is_set(c, "dns.magic_dns"))
            problem(c, CONFIG_ERROR, "dns.base_domain", "must be set when dns.magic_dns is true");
        else
            c->cfg->dns_magic_dns = false;
    }
    if (cfg->dns_nextra_records && *cfg->dns_extra_records_path)
        problem(c, CONFIG_ERROR, "dns.extra_records_path",
                "cannot be used together with dns.extra_records");
    if (cfg->dns_override_local_dns && is_set(c, "dns.override_local_dns") &&
        cfg->dns_nameservers_global.n == 0)
        problem(c, CONFIG_ERROR, "dns.nameservers.global",
                "must list at least one nameserver when dns.override_local_dns is true");
}

/* A name a CA can issue for, written as it goes into a CSR: letters, digits, '-' and
 * dots between labels. */
static bool dns_name_ok(const char *s)
{
    size_t n = strlen(s);

    return n > 0 && n <= 253 && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                          "0123456789-.") == n &&
           s[0] != '.' && s[0] != '-' && s[n - 1] != '.' && !strstr(s, "..");
}

static void check_acme(struct load_ctx *c)
{
    const struct hs_config *cfg = c->cfg;
    char host[256], port[16];

    if (!dns_name_ok(cfg->tls_letsencrypt_hostname))
        problem(c, CONFIG_ERROR, "tls_letsencrypt_hostname", "is not a DNS name");
    if (!hs_has_prefix(cfg->acme_url, "https://") && !hs_has_prefix(cfg->acme_url, "http://"))
        problem(c, CONFIG_ERROR, "acme_url", "must be an http(s) URL of an ACME directory");
    if (!*cfg->tls_letsencrypt_cache_dir)
        problem(c, CONFIG_ERROR, "tls_letsencrypt_cache_dir",
                "must be set when tls_letsencrypt_hostname is");
    if (strcmp(cfg->tls_letsencrypt_challenge_type, "HTTP-01") == 0 &&
        hs_split_host_port(cfg->tls_letsencrypt_listen, host, sizeof(host), port,
                           sizeof(port)) < 0)
        problem(c, CONFIG_ERROR, "tls_letsencrypt_listen", "is not host:port (or :http)");
    if (!hs_has_prefix(cfg->server_url, "https://"))
        problem(c, CONFIG_WARNING, "server_url",
                "does not start with https:// although the listener serves TLS "
                "(tls_letsencrypt_hostname)");
}

static void check_tls(struct load_ctx *c)
{
    const struct hs_config *cfg = c->cfg;

    if (*cfg->tls_cert_path && !*cfg->tls_key_path)
        problem(c, CONFIG_ERROR, "tls_key_path", "must be set when tls_cert_path is");
    if (*cfg->tls_key_path && !*cfg->tls_cert_path)
        problem(c, CONFIG_ERROR, "tls_cert_path", "must be set when tls_key_path is");
    if (*cfg->tls_letsencrypt_hostname && *cfg->tls_cert_path)
        problem(c, CONFIG_ERROR, "tls_letsencrypt_hostname",
                "cannot be used together with tls_cert_path");
    if (*cfg->tls_letsencrypt_hostname)
        check_acme(c);
}

/* 0.22.3's private_key_path was the legacy protocol's key and the embedded DERP server's;
 * the latter lives on, so a 0.22.3 config keeps its relay's key. */
static void derive_derp_key(struct load_ctx *c)
{
    struct hs_config *cfg = c->cfg;

    if (!is_set(c, "private_key_path") || !*cfg->legacy_private_key_path ||
        is_set(c, "derp.server.private_key_path"))
        return;
    free(cfg->derp_server_private_key_path);
    cfg->derp_server_private_key_path = hs_strdup(cfg->legacy_private_key_path);
}

int config_mesh_peer_split(const char *entry, struct config_mesh_peer *out, const char **why)
{
    struct config_mesh_peer m = { .tls = hs_has_prefix(entry, "https://") };
    char authority[sizeof(m.host) + sizeof(m.port) + 8];
    bool url = m.tls || hs_has_prefix(entry, "http://");
    const char *p = url ? strstr(entry, "://") + 3 : entry, *slash = p + strcspn(p, "/?#");
    const char *dflt = m.tls ? ":443" : ":80";
    size_t alen = (size_t)(slash - p);
    uint64_t num;

    *why = "is neither host:port nor http(s)://host[:port][/path]";
    if ((!url && strstr(entry, "://")) || alen == 0 || alen >= sizeof(m.host) + sizeof(m.port))
        return -EINVAL;
    if (*slash && (*slash != '/' || !url || strlen(slash) >= sizeof(m.path) ||
                   strpbrk(slash, "?# \t\r\n")))
        return -EINVAL;
    /* A URL may leave the port out ("[v6]" alone has colons but no "]:"). */
    snprintf(authority, sizeof(authority), "%.*s", (int)alen, p);
    if (url && (p[0] == '[' ? !strstr(authority, "]:") : !memchr(p, ':', alen)))
        strcat(authority, dflt);
    if (hs_split_host_port(authority, m.host, sizeof(m.host), m.port, sizeof(m.port)) < 0 ||
        !m.host[0] || strpbrk(m.host, " \t\r\n@") || hs_parse_u64(m.port, 65535, &num) < 0 ||
        num == 0)
        return -EINVAL;
    snprintf(m.path, sizeof(m.path), "%s", *slash ? slash : "/derp");
    *out = m;
    return 0;
}

/* The DERP mesh (ours): peers need the shared key, and each entry must be dialable. */
static void check_mesh(struct load_ctx *c)
{
    const struct hs_config *cfg = c->cfg;
    struct config_mesh_peer m;
    const char *why;

    if (cfg->derp_server_mesh_with.n && !*cfg->derp_server_mesh_key_path)
        problem(c, CONFIG_ERROR, "derp.server.mesh_with",
                "needs derp.server.mesh_key_path (the key the peers share)");
    for (size_t i = 0; i < cfg->derp_server_mesh_with.n; i++)
        if (config_mesh_peer_split(cfg->derp_server_mesh_with.v[i], &m, &why) < 0)
            problem(c, CONFIG_ERROR, "derp.server.mesh_with", "entry \"%s\" %s",
                    cfg->derp_server_mesh_with.v[i], why);
    if (!*cfg->derp_server_mesh_url)
        return;
    if (config_mesh_peer_split(cfg->derp_server_mesh_url, &m, &why) < 0)
        problem(c, CONFIG_ERROR, "derp.server.mesh_url", "\"%s\" %s",
                cfg->derp_server_mesh_url, why);
    else if (!*cfg->derp_server_mesh_key_path)
        problem(c, CONFIG_WARNING, "derp.server.mesh_url",
                "has no effect without derp.server.mesh_key_path (no mesh)");
    else if (cfg->db_type != DB_POSTGRES)
        problem(c, CONFIG_WARNING, "derp.server.mesh_url",
                "has no effect on SQLite (replicas share a PostgreSQL database)");
}

static void check_derp(struct load_ctx *c)
{
    const struct hs_config *cfg = c->cfg;

    if (!cfg->derp_server_enabled) {
        if (cfg->derp_server_mesh_with.n || *cfg->derp_server_mesh_key_path ||
            *cfg->derp_server_mesh_url)
            problem(c, CONFIG_WARNING,
                    cfg->derp_server_mesh_with.n     ? "derp.server.mesh_with"
                    : *cfg->derp_server_mesh_key_path ? "derp.server.mesh_key_path"
                                                      : "derp.server.mesh_url",
                    "has no effect while derp.server.enabled is false");
        return;
    }
    check_mesh(c);
    if (!*cfg->derp_server_stun_listen_addr)
        problem(c, CONFIG_ERROR, "derp.server.stun_listen_addr",
                "must be set when derp.server.enabled is true");
    if (strcmp(cfg->derp_server_private_key_path, cfg->noise_private_key_path) == 0)
        problem(c, CONFIG_ERROR, "derp.server.private_key_path",
                "must differ from noise.private_key_path");
}

static void check_times(struct load_ctx *c)
{
    const struct hs_config *cfg = c->cfg;

    if (cfg->ephemeral_inactivity_timeout_us <= MIN_EPHEMERAL_TIMEOUT_US)
        problem(c, CONFIG_ERROR, "node.ephemeral.inactivity_timeout",
                "must be longer than 65s, got %llds",
                (long long)(cfg->ephemeral_inactivity_timeout_us / HS_USEC_PER_SEC));
    if (cfg->cli_timeout_us <= 0)
        problem(c, CONFIG_ERROR, "cli.timeout", "must be longer than 0");
    if (cfg->tuning_batch_change_delay_us <= 0)
        problem(c, CONFIG_ERROR, "tuning.batch_change_delay", "must be longer than 0");
    if (cfg->tuning_keepalive_interval_us < HS_USEC_PER_SEC)
        problem(c, CONFIG_ERROR, "tuning.keepalive_interval", "must be at least 1s");
    if (cfg->tuning_node_write_interval_us <= 0)
        problem(c, CONFIG_ERROR, "tuning.node_write_interval", "must be longer than 0");
    if (cfg->tuning_register_cache_expiration_us <= 0)
        problem(c, CONFIG_ERROR, "tuning.register_cache_expiration", "must be longer than 0");
    if (cfg->tuning_http_request_timeout_us < HS_USEC_PER_SEC)
        problem(c, CONFIG_ERROR, "tuning.http_request_timeout", "must be at least 1s");
    if (cfg->tuning_unreachable_client_timeout_us < HS_USEC_PER_SEC)
        problem(c, CONFIG_ERROR, "tuning.unreachable_client_timeout", "must be at least 1s");
    if (cfg->pg_unreachable_timeout_us < HS_USEC_PER_SEC)
        problem(c, CONFIG_ERROR, "database.postgres.unreachable_timeout", "must be at least 1s");
    if (cfg->node_routes_ha_probe_interval_us == 0)
        return; /* probing disabled */
    if (cfg->node_routes_ha_probe_interval_us < 2 * HS_USEC_PER_SEC)
        problem(c, CONFIG_ERROR, "node.routes.ha.probe_interval", "must be 0 or at least 2s");
    if (cfg->node_routes_ha_probe_timeout_us < HS_USEC_PER_SEC ||
        cfg->node_routes_ha_probe_timeout_us >= cfg->node_routes_ha_probe_interval_us)
        problem(c, CONFIG_ERROR, "node.routes.ha.probe_timeout",
                "must be at least 1s and shorter than node.routes.ha.probe_interval");
}

static void check_oidc(struct load_ctx *c)
{
    const struct hs_config *cfg = c->cfg;

    if (*cfg->oidc_client_secret && *cfg->oidc_client_secret_path)
        problem(c, CONFIG_ERROR, "oidc.client_secret_path",
                "cannot be used together with oidc.client_secret");
    if (*cfg->oidc_issuer && !hs_has_prefix(cfg->oidc_issuer, "https://") &&
        !hs_has_prefix(cfg->oidc_issuer, "http://"))
        problem(c, CONFIG_ERROR, "oidc.issuer", "must be an http:// or https:// URL");
    if (*cfg->oidc_issuer && !*cfg->oidc_client_id)
        problem(c, CONFIG_ERROR, "oidc.client_id", "is required with oidc.issuer");
    if (*cfg->oidc_issuer && !hs_strv_contains(&cfg->oidc_scope, "openid"))
        problem(c, CONFIG_ERROR, "oidc.scope", "must include openid");
}

void config__check(struct load_ctx *c)
{
    check_server_url(c);
    check_prefixes(c);
    check_dns(c);
    check_tls(c);
    derive_derp_key(c);
    check_derp(c);
    check_times(c);
    check_oidc(c);
}
