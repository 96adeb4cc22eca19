/* config internals shared by config.c (loading, env, diagnostics), config_tree.c (YAML →
 * bounded node tree), config_keys.c (the key table and value parsers) and config_check.c
 * (cross-key validation, prefix/IP parsing). Not for other modules. */
#ifndef HS_CONFIG_INTERNAL_H
#define HS_CONFIG_INTERNAL_H

#include "config/config.h"

/* ---- YAML node tree ----
 * Built from libyaml events without recursion; depth is capped at CONFIG_MAX_DEPTH while
 * building, so code walking the finished tree may recurse (at most that deep). */
enum ynode_kind { YN_SCALAR, YN_SEQ, YN_MAP };

struct ynode {
    enum ynode_kind kind;
    int line;       /* 1-based; 0 for values that came from the environment or defaults */
    bool null;      /* plain "", "~" or "null": treated as "not set" */
    char *str;      /* scalar text (NUL-terminated) */
    char *key;      /* set when this node is a mapping value */
    int key_line;
    struct ynode *child, *last, *next;
    size_t nchild;
};

struct ytree {
    struct ynode *root;     /* NULL for an empty document */
    struct ynode **all;     /* every node, so freeing needs no recursion */
    size_t n, cap;
};

/* Called for every problem found while building; key is the dotted path or NULL. */
typedef void (*ytree_report_fn)(void *arg, enum config_diag_level lvl, const char *key,
                                int line, const char *msg);

/* Parses one YAML (or JSON) document. Returns 0 (the tree may still have skipped duplicate
 * keys, which were reported as errors), or -EINVAL / -E2BIG after reporting why. */
int ytree_parse(const char *text, size_t len, struct ytree *t, ytree_report_fn report, void *arg);
/* A synthetic scalar (environment value, default). */
struct ynode *ytree_scalar(struct ytree *t, const char *s);
void ytree_free(struct ytree *t);

static inline int ynode_line(const struct ynode *n)
{
    return n->key ? n->key_line : n->line;
}

/* ---- the key table ---- */
enum key_type {
    K_STR, K_PATH, K_PATH_ENV, K_ADDR, K_BOOL, K_INT, K_DUR, K_MODE, K_ENUM, K_CHOICE,
    K_LOGLEVEL, K_LOGFMT, K_SSL, K_IP, K_PREFIX, K_PREFIXES, K_STRV, K_PATHV, K_NSV,
    K_CIDRV, K_SPLIT, K_RECORDS, K_KV,
    K_NOFIELD, /* read and dropped: only for keys with .inert set */
};

enum key_flags {
    KF_LEGACY = 1u << 0, /* a 0.22.3-only key: using it selects the legacy layout */
    KF_NEVER = 1u << 1,  /* .inert is for good, not for now ("has no effect", no "yet") */
};

struct enum_val {
    const char *name;
    int val;
};

struct key_def {
    const char *name;       /* dotted name (current layout, or 0.22 for KF_LEGACY keys) */
    const char *legacy;     /* 0.22.3 name of the same setting, or NULL */
    enum key_type type;
    size_t off;             /* offsetof(struct hs_config, field) */
    const char *def;        /* default, parsed like an env value; NULL = empty/zero */
    const char *legacy_def; /* default in the legacy layout; NULL = def */
    int64_t min, max;       /* K_INT range */
    const void *aux;        /* K_ENUM/K_CHOICE: struct enum_val[]; K_IP/K_PREFIX: family */
    unsigned flags;
    /* Set when the key has no effect in this server: why, in a few words. Given a value
     * other than its default (or .idle), it earns one warning at start and in configtest,
     * so no setting is dropped silently; tests/unit/test_config.c checks that every row
     * either has this or names the test that shows it working. */
    const char *inert;
    const char *idle;       /* inert keys: the value that asks for what we do anyway */
};

extern const struct key_def config__keys[];
extern const size_t config__nkeys;

enum val_src { SRC_DEFAULT, SRC_FILE, SRC_ENV };

struct load_ctx {
    struct hs_config *cfg;
    struct config_diags *diags;
    enum config_purpose purpose;
    const char *file;                 /* for diagnostics; NULL for in-memory text */
    const struct ynode **file_cur;    /* per key: value under its current name */
    const struct ynode **file_leg;    /* per key: value under its legacy name */
    enum val_src *src;                /* per key: where the applied value came from */
    int *line;                        /* per key: its line (0 unless from the file) */
    const char **used_name;           /* per key: the name the value was given under */
    struct ytree scratch;             /* env values and defaults */
    /* The key being applied, for diagnostics. */
    const char *cur_name;
    const char *cur_env;
};

/* Adds a diagnostic; an error on a key the CLI does not need becomes a warning for
 * CONFIG_FOR_CLI. key may be NULL; line 0 means unknown. */
void config__diag(struct load_ctx *c, enum config_diag_level lvl, const char *key, int line,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Looks a dotted key up by its name or its 0.22.3 alias (case-insensitive); *via_alias
 * tells whether the alias matched. Returns the table index or -1. */
int config__key_find(const char *name, bool *via_alias);
/* True when some key lives below name ("database", "dns_config.nameservers"...). */
bool config__is_section(const char *name);
/* Parses node n into key k's field. Returns 0, or -EINVAL after reporting the problem. */
int config__apply(struct load_ctx *c, const struct key_def *k, const struct ynode *n);
/* Frees every field the table owns and clears it. */
void config__free_fields(struct hs_config *cfg);
/* True when key k holds the same value in a and b (NULL and "" are the same string). */
bool config__field_equal(const struct key_def *k, const struct hs_config *a,
                         const struct hs_config *b);

/* Cross-key validation; runs after every key has a value. */
void config__check(struct load_ctx *c);
/* One warning per inert key given a value other than its idle one (server purpose only). */
void config__warn_inert(struct load_ctx *c);
/* Parses an IP address of the given family (0 = any) into out[16]; returns the family. */
int config__parse_ip(const char *s, int family, uint8_t out[16]);
/* What a Tailscale client takes as a resolver (dnstype.Resolver.Addr): an IP address, an
 * IP:port ([v6]:port), or a DNS-over-HTTP(S) URL. */
bool config__is_nameserver(const char *s);
/* Writes the message into err and returns -EINVAL. */
int config__fail(char *err, size_t errsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A JSON list of extra records (config_dns_records_parse's rules, at most max of them) into
 * *out and *n; -EINVAL with the reason in err. */
int config__dns_records_from_json(json_t *list, size_t max, struct dns_record **out, size_t *n,
                                  char *err, size_t errsize);

#endif
