/* config: headscale's config.yaml (both the 0.22.3 flat layout and the current nested one),
 * HEADSCALE_* environment overrides, defaults and validation.
 *
 * Loading never exits: every problem is collected into a struct config_diag list so that
 * `headscale configtest` can print them all, and `serve` can refuse to start on errors. */
#ifndef HS_CONFIG_H
#define HS_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "util/util.h"

#define CONFIG_MAX_FILE_BYTES (1u << 20)
#define CONFIG_MAX_DEPTH 16
#define CONFIG_MAX_NODES (1u << 18)   /* YAML nodes per document */
#define CONFIG_MAX_MAP_KEYS 4096      /* keys in one mapping (duplicate check is quadratic) */
#define CONFIG_MAX_KEY_LEN 256        /* a dotted key path */

enum db_type { DB_SQLITE, DB_POSTGRES };
enum ip_alloc { IP_ALLOC_SEQUENTIAL, IP_ALLOC_RANDOM };
enum policy_mode { POLICY_MODE_FILE, POLICY_MODE_DATABASE };

struct ip_prefix {
    int family;       /* AF_INET or AF_INET6; 0 when unset */
    uint8_t addr[16]; /* network address, host bits cleared */
    uint8_t bits;
    char text[64];    /* canonical "100.64.0.0/10" */
};

struct dns_split {
    char *domain;
    struct hs_strv nameservers;
};

struct dns_record {
    char *name, *type, *value;
};

/* After config_load every char * field except path/dir is non-NULL (empty when unset). */
struct hs_config {
    char *path;   /* the file that was loaded, or NULL when none was found */
    char *dir;    /* its directory; relative paths in the file are resolved against it */
    bool legacy;  /* the file used the 0.22.3 flat layout */

    char *server_url;          /* required; http:// or https:// */
    char *listen_addr;         /* "127.0.0.1:8080" */
    char *metrics_listen_addr; /* empty disables */
    struct hs_strv trusted_proxies;
    char *noise_private_key_path;
    char *legacy_private_key_path; /* 0.22 private_key_path: the DERP key when no other is set */

    struct ip_prefix prefix_v4, prefix_v6;
    enum ip_alloc ip_allocation;

    /* derp */
    bool derp_server_enabled;
    int derp_server_region_id;
    char *derp_server_region_code, *derp_server_region_name;
    char *derp_server_stun_listen_addr;
    char *derp_server_private_key_path;
    bool derp_server_auto_add_region;
    char *derp_server_ipv4, *derp_server_ipv6;
    bool derp_server_verify_clients;
    char *derp_server_mesh_key_path; /* our key: DERP mesh between replicas */
    struct hs_strv derp_server_mesh_with;
    char *derp_server_mesh_url; /* how other replicas dial our relay ("": found, see README) */
    struct hs_strv derp_urls, derp_paths;
    bool derp_auto_update;
    int64_t derp_update_frequency_us;

    bool disable_check_updates;
    int64_t node_expiry_us;                  /* 0 = never */
    int64_t ephemeral_inactivity_timeout_us; /* > 65 s */
    int64_t node_routes_ha_probe_interval_us; /* 0 disables HA probing */
    int64_t node_routes_ha_probe_timeout_us;
    int64_t preauth_keys_revoked_retention_us;
    int64_t node_update_check_interval_us;   /* 0.22 node_update_check_interval (inert) */
    bool auto_update_enabled;                /* the default-auto-update node attribute */

    /* database */
    enum db_type db_type;
    bool db_debug;
    char *sqlite_path;
    bool sqlite_wal;
    int sqlite_wal_autocheckpoint;
    char *pg_host; /* host name, IP, or a unix socket directory (starts with '/') */
    int pg_port;
    char *pg_name, *pg_user, *pg_pass;
    char *pg_sslmode; /* "disable", "require", "verify-full", ... ("true" → require) */
    int pg_max_open_conns, pg_max_idle_conns, pg_conn_max_idle_time_secs;
    /* A PostgreSQL gone silent (a partition, a host gone) is given up after this long: the
     * connect timeout, TCP keep-alives and TCP_USER_TIMEOUT of every connection (ours). */
    int64_t pg_unreachable_timeout_us;

    /* TLS */
    char *tls_cert_path, *tls_key_path;
    char *tls_letsencrypt_hostname, *acme_url, *acme_email;
    char *tls_letsencrypt_cache_dir, *tls_letsencrypt_challenge_type, *tls_letsencrypt_listen;

    /* logging */
    enum log_level log_level;
    bool log_json;

    /* policy */
    enum policy_mode policy_mode;
    char *policy_path; /* empty = allow all */

    /* dns */
    bool dns_magic_dns;
    char *dns_base_domain;
    bool dns_override_local_dns;
    struct hs_strv dns_nameservers_global;
    struct dns_split *dns_split;
    size_t dns_nsplit;
    struct hs_strv dns_search_domains;
    struct dns_record *dns_extra_records;
    size_t dns_nextra_records;
    char *dns_extra_records_path;
    bool dns_use_username_in_magic_dns; /* 0.22 layout: <given>.<user>.<base_domain> */

    char *unix_socket;
    unsigned unix_socket_permission; /* mode bits, e.g. 0770 */

    /* oidc (used by a later issue; parsed now so configs with it load) */
    char *oidc_issuer, *oidc_client_id, *oidc_client_secret, *oidc_client_secret_path;
    struct hs_strv oidc_scope, oidc_allowed_domains, oidc_allowed_users, oidc_allowed_groups;
    bool oidc_only_start_if_available, oidc_use_expiry_from_token, oidc_email_verified_required;
    bool oidc_pkce_enabled;
    char *oidc_pkce_method;                /* "S256" or "plain" */
    struct hs_strv oidc_extra_params;      /* "key=value", added to the authorize URL */
    bool oidc_strip_email_domain;          /* 0.22 only (default true there, false otherwise) */
    int64_t oidc_expiry_us;                /* 0.22 oidc.expiry (180d in the legacy layout, else 0);
                                            * when non-zero it wins over node_expiry_us for
                                            * OIDC-registered nodes */

    bool logtail_enabled;
    bool taildrop_enabled;
    bool randomize_client_port;

    /* cli */
    char *cli_address, *cli_api_key;
    int64_t cli_timeout_us;
    bool cli_insecure;

    /* tuning */
    int64_t tuning_batch_change_delay_us;
    int64_t tuning_register_cache_expiration_us;
    int tuning_register_cache_max_entries;
    /* New pending registrations a client address may start per minute (ours; 0 = no limit) */
    int tuning_register_rate_limit;
    int64_t tuning_keepalive_interval_us; /* map stream keep-alive (ours; ~50 s) */
    int tuning_map_peer_run; /* peers per cached zstd frame of full maps (ours) */
    int64_t tuning_node_write_interval_us; /* the state's writer of node reports (ours) */
    /* The HTTP front door (ours): a request's head and body arrive within the timeout; the
     * caps count connections being set up or carrying HTTP requests, not handed-off
     * /ts2021 and /derp streams. 0 per address: no cap. */
    int64_t tuning_http_request_timeout_us;
    int tuning_http_max_connections;
    int tuning_http_max_connections_per_ip;
    int tuning_handshake_rate_limit; /* Noise handshakes per minute per address; 0: none */
    int tuning_derp_max_clients;        /* the embedded relay's clients (ours) */
    int tuning_derp_max_clients_per_ip; /* the same per address; 0: no cap */
    int tuning_control_max_body_buffer_mib; /* request bodies held by the control loop */
    /* A client gone silent on listen_addr (no FIN, no RST) is cut off after this long: TCP
     * keep-alives and TCP_USER_TIMEOUT on every accepted connection (ours). */
    int64_t tuning_unreachable_client_timeout_us;
};

enum config_diag_level { CONFIG_WARNING, CONFIG_ERROR };

struct config_diag {
    enum config_diag_level level;
    char *file; /* the config file, or NULL (env, defaults, in-memory text) */
    char *key;  /* dotted key ("database.postgres.port"), or NULL */
    int line;   /* 1-based line in the file, 0 when unknown (env, defaults) */
    char *msg;
};

struct config_diags {
    struct config_diag *v;
    size_t n, cap;
    size_t nerrors;
};

enum config_purpose {
    CONFIG_FOR_SERVER, /* serve, configtest: everything is validated */
    CONFIG_FOR_CLI,    /* the CLI needs unix_socket, cli.*, log.*: other keys only warn */
};

/* Finds and loads the config. path_override is -c/--config (may be NULL); otherwise
 * HEADSCALE_CONFIG, then config.yaml (or .json) in /etc/headscale, $HOME/.headscale, ".".
 * A missing file is a warning and defaults are used (as headscale does since 0.27), unless
 * path_override/HEADSCALE_CONFIG names a file that does not exist (an error).
 * Always fills *out (free with config_free) and *diags (free with config_diags_free).
 * Returns 0, or -EINVAL when diags holds at least one error. */
int config_load(const char *path_override, enum config_purpose purpose, struct hs_config *out,
                struct config_diags *diags);

/* Same, from an in-memory YAML text (unit tests); dir resolves relative paths. */
int config_load_text(const char *text, size_t len, const char *dir, enum config_purpose purpose,
                     struct hs_config *out, struct config_diags *diags);

void config_free(struct hs_config *cfg);
void config_diags_free(struct config_diags *d);
/* Prints every diagnostic, one per line: "error: config.yaml:12: database.type: ..." */
void config_diags_print(const struct config_diags *d, FILE *f);
/* Logs them through util's logger (warnings as warn, errors as error). */
void config_diags_log(const struct config_diags *d);

/* Calls fn(arg, key) with the dotted name of every key whose value differs between a and b
 * (the current layout's name; a 0.22.3-only key under its own). */
typedef void (*config_changed_fn)(void *arg, const char *key);
void config_each_changed(const struct hs_config *a, const struct hs_config *b,
                         config_changed_fn fn, void *arg);

/* "100.64.0.0/10" → prefix (host bits must be zero). -EINVAL otherwise. */
int config_parse_prefix(const char *s, struct ip_prefix *out);

/* The dns.extra_records_path file: a JSON list of {"Name","Type","Value"} (field names in any
 * case, other fields ignored), each an A or AAAA record with an address of that family;
 * duplicates are dropped. Returns 0 with the records in *out and *n (free with
 * config_dns_records_free), 1 when the file holds nothing to apply (empty, or JSON null: a
 * file being written; the records in force stay), -EINVAL with the reason in err. */
#define CONFIG_MAX_EXTRA_RECORDS 65536u
#define CONFIG_MAX_EXTRA_RECORDS_BYTES (8u << 20)
int config_dns_records_parse(const char *text, size_t len, struct dns_record **out, size_t *n,
                             char *err, size_t errsize);
void config_dns_records_free(struct dns_record *v, size_t n);

/* The DNS settings that may change while serving (PUT /api/v1/dns): the dns section without
 * base_domain (every node's name hangs on it), extra_records_path (the file stays the source
 * of its records) and the 0.22 naming. In JSON (the API's shape, and how the store keeps
 * them): {"magicDns", "overrideLocalDns", "nameservers": {"global": [..], "split": {domain:
 * [..]}}, "searchDomains": [..], "extraRecords": [{"name", "type", "value"}]}. */
#define CONFIG_DNS_MAX_NAMESERVERS 32 /* in one list */
#define CONFIG_DNS_MAX_SPLIT 256      /* split DNS domains */
#define CONFIG_DNS_MAX_SEARCH 64      /* search domains */
#define CONFIG_DNS_MAX_RECORDS 4096   /* extra records */
#define CONFIG_DNS_MAX_BYTES (1u << 20) /* their JSON text */
struct dns_settings {
    bool magic_dns;
    bool override_local_dns;
    struct hs_strv nameservers; /* global */
    struct dns_split *split;
    size_t nsplit;
    struct hs_strv search_domains;
    struct dns_record *records;
    size_t nrecords;
};
/* cfg's settings, pointing into cfg (not to be finied). */
struct dns_settings config_dns_settings_view(const struct hs_config *cfg);
/* A copy of cfg's (the starting value); free with config_dns_settings_fini. */
void config_dns_settings_of(const struct hs_config *cfg, struct dns_settings *out);
void config_dns_settings_fini(struct dns_settings *d); /* zeroes d */
/* Reads settings in the JSON shape above over base: a member left out keeps base's value, a
 * null or empty one clears it. Every value is checked (addresses, domain names, counts,
 * unknown members, what cfg does not allow to change: baseDomain other than cfg's, MagicDNS
 * without a base domain or under the 0.22 layout). 0 with *out filled (free with
 * config_dns_settings_fini); -EINVAL or -E2BIG with a sentence in err and *out untouched. */
int config_dns_settings_parse(const struct hs_config *cfg, const struct dns_settings *base,
                              const char *text, size_t len, struct dns_settings *out,
                              char *err, size_t errsize);
/* d in the JSON shape above (a new object). */
json_t *config_dns_settings_json(const struct dns_settings *d);
bool config_dns_settings_equal(const struct dns_settings *a, const struct dns_settings *b);

/* One derp.server.mesh_with entry: "host:port", "[v6]:port" or "http(s)://host[:port][/path]"
 * (port 80 or 443 and path /derp when left out; host:port is plain HTTP). -EINVAL with the
 * reason in *why (a static sentence) otherwise. */
#define CONFIG_MESH_HOST_MAX 256
struct config_mesh_peer {
    char host[CONFIG_MESH_HOST_MAX];
    char port[8];
    char path[256];
    bool tls;
};
int config_mesh_peer_split(const char *entry, struct config_mesh_peer *out, const char **why);

#endif
