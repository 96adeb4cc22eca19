/* cli internals shared by the core/cli sources and tests/unit/test_cli.c: the command
 * tree types, argv parsing, output rendering (tables, JSON, YAML) and the REST client.
 * Everything here works without a server, so the unit tests can drive it directly. */
#ifndef HS_CLI_INTERNAL_H
#define HS_CLI_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"
#include "util/util.h"

#define CLI_MAX_DEPTH 4             /* root + up to three levels of subcommands */
#define CLI_MAX_POSITIONAL 16
#define CLI_MAX_FLAGS 64            /* flag occurrences on one command line */
#define CLI_MAX_RESPONSE (16u << 20) /* REST response body */
#define CLI_MAX_OUTPUT (64u << 20)  /* rendered table / JSON / YAML */
#define CLI_MAX_POLICY (1u << 20)   /* policy file for `policy set` */

/* ---- command tree ---- */

enum cli_flag_type { CLI_BOOL, CLI_STRING, CLI_LIST /* repeatable, comma separated */ };

struct cli_flag {
    const char *name;      /* long name without "--"; NULL ends a flag array */
    char shorthand;        /* 'u' for -u, 0 for none */
    enum cli_flag_type type;
    const char *def;       /* default value text, or NULL */
    const char *help;
    bool hidden;           /* deprecated aliases (-n/--namespace) stay usable but unlisted */
};

struct cli_ctx;

struct cli_cmd {
    const char *name;
    const char *const *aliases;      /* NULL-terminated, or NULL */
    const char *use;                 /* usage line after "headscale ... ", e.g. "create NAME" */
    const char *summary;
    const char *long_help;           /* optional paragraph for --help */
    const struct cli_flag *flags;    /* this command's flags, or NULL */
    const struct cli_flag *pflags;   /* flags inherited by every subcommand, or NULL */
    const struct cli_cmd *const *subs; /* NULL-terminated, or NULL for a leaf */
    int (*run)(struct cli_ctx *ctx); /* NULL for a pure group: it prints its help */
    int min_args, max_args;          /* positional arguments; max -1 = unlimited */
};

/* The root of the `headscale` tree (cli_tree.c). */
extern const struct cli_cmd cli_root;

/* ---- argv parsing (cli_parse.c) ---- */

struct cli_flagval {
    const struct cli_flag *flag;
    const char *value; /* borrowed from argv; "true"/"false" for bools */
};

struct cli_args {
    const struct cli_cmd *path[CLI_MAX_DEPTH]; /* path[0] is the root */
    size_t depth;                              /* number of entries in path */
    const char *pos[CLI_MAX_POSITIONAL];
    size_t npos;
    struct cli_flagval vals[CLI_MAX_FLAGS];
    size_t nvals;
    bool help;      /* -h/--help was given */
    char err[256];  /* parse error, when cli_parse failed */
};

/* Parses argv against root. Flags may stand anywhere (also before the subcommand) as
 * --flag value, --flag=value, -f value, -fvalue or -f=value; "--" ends flags.
 * Returns 0, or -EINVAL with a message in out->err (the path resolved so far stays valid
 * so the caller can print the right usage). argv strings are borrowed. */
int cli_parse(const struct cli_cmd *root, int argc, char **argv, struct cli_args *out);

const struct cli_cmd *cli_args_cmd(const struct cli_args *a); /* the resolved command */
/* Last value given for the flag (by long name), else its default, else NULL. */
const char *cli_flag_str(const struct cli_args *a, const char *name);
bool cli_flag_bool(const struct cli_args *a, const char *name);
bool cli_flag_given(const struct cli_args *a, const char *name);
/* Every value of a CLI_LIST flag, split on commas, appended to out. */
int cli_flag_list(const struct cli_args *a, const char *name, struct hs_strv *out);
/* cobra-style help for the resolved command. */
void cli_help(const struct cli_args *a, FILE *f);

/* ---- output (cli_output.c) ---- */

enum cli_format { CLI_FMT_HUMAN, CLI_FMT_JSON, CLI_FMT_JSON_LINE, CLI_FMT_YAML };

int cli_format_parse(const char *s, enum cli_format *out); /* NULL/"" is human */
/* True when any argument is json, json-line or yaml (headscale then silences logging). */
bool cli_machine_output(int argc, char **argv);
/* JSON pretty-printed with one TAB per level (Go's MarshalIndent(v, "", "\t")). */
int cli_render_json(const json_t *j, struct hs_buf *out);
/* YAML of a JSON value laid out as yaml.v3 does (cli_yaml.c), ending with a newline; strings
 * that would read back as another type (numbers, booleans, null, empty) are double-quoted. */
int cli_render_yaml(const json_t *j, struct hs_buf *out);

/* The messages headscale's CLI prints (cli_proto.c): 0.29.3's, and 0.22.3's for the commands
 * only it has. */
struct cli_msg;
extern const struct cli_msg cli_msg_user, cli_msg_pre_auth_key, cli_msg_api_key, cli_msg_node,
    cli_msg_backfill, cli_msg_health, cli_msg_empty, cli_msg_route;
/* A REST reply object reshaped as headscale prints message m: through encoding/json
 * (snake_case, zero values left out, Timestamps as {seconds, nanos}) or, when yaml, through
 * yaml.v3 (every member under its lowercased Go name). New reference. */
json_t *cli_proto(const json_t *rest, const struct cli_msg *m, bool yaml);
/* The same for a list: an empty one is null in JSON (a nil slice), [] in YAML. */
json_t *cli_proto_list(const json_t *rest, const struct cli_msg *m, bool yaml);
/* Serializes j in a machine format (not CLI_FMT_HUMAN), without trailing newline. */
int cli_render(const json_t *j, enum cli_format fmt, struct hs_buf *out);

/* A text table in pterm's DefaultTable layout: cells padded to the column width and
 * separated by " | ". Cell widths ignore ANSI colour sequences. */
struct cli_table {
    size_t ncols, ncells;
    char **cells;
};
void cli_table_init(struct cli_table *t, const char *const *header, size_t ncols);
void cli_table_add(struct cli_table *t, const char *cell); /* copies; rows fill left to right */
int cli_table_render(const struct cli_table *t, bool color, struct hs_buf *out);
void cli_table_free(struct cli_table *t);

/* How a JSON member becomes a table cell. */
enum cli_cell {
    CELL_STR,     /* string or number; null/absent → "" */
    CELL_BOOL,    /* true/false */
    CELL_TIME,    /* RFC 3339 → "2006-01-02 15:04:05"; null → "" */
    CELL_EXPIRY,  /* like CELL_TIME, green if future, red if past; null → "-" */
    CELL_STRV,    /* array of strings joined with "," */
    CELL_FN,      /* computed by fn */
};

struct cli_column {
    const char *title;
    const char *key; /* member name; "a.b" looks into a nested object */
    enum cli_cell kind;
    void (*fn)(const struct cli_ctx *ctx, const json_t *row, struct hs_buf *cell);
};

/* Appends one table row per element of rows. */
void cli_table_rows(const struct cli_ctx *ctx, struct cli_table *t, const struct cli_column *cols,
                    size_t ncols, const json_t *rows);
const json_t *cli_json_path(const json_t *obj, const char *path); /* "a.b" lookup */
/* Wraps s in the ANSI colour code when ctx->color; code is e.g. "92" (light green). */
void cli_colour(const struct cli_ctx *ctx, const char *code, const char *s, struct hs_buf *out);
#define CLI_GREEN "92"
#define CLI_RED "91"

/* ---- context shared by the command handlers (cli.c) ---- */

struct cli_http;

struct cli_ctx {
    struct cli_args args;
    enum cli_format fmt;
    bool color;           /* stdout is a terminal and NO_COLOR is unset */
    bool machine;         /* logging silenced for machine-readable output */
    bool have_cfg;
    struct hs_config cfg; /* loaded on first use (CONFIG_FOR_CLI) */
    struct cli_http *http;
    FILE *out, *err;
    int64_t now_us;       /* one clock reading per invocation */
};

/* Prints the error as "Error: msg" (human) or {"error":"msg"} in the chosen format to
 * ctx->err. Returns 1, the exit status, so handlers can `return cli_fail(...)`. */
int cli_fail(struct cli_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Success output: human text, or result rendered in the machine format, reshaped as message
 * msg (NULL: as it is, for the plain maps and strings headscale prints). Returns 0 or 1. */
int cli_print(struct cli_ctx *ctx, const json_t *result, const struct cli_msg *msg,
              const char *human);
/* A list of REST objects in a machine format, each reshaped as msg. Returns 0 or 1. */
int cli_print_rows(struct cli_ctx *ctx, const json_t *rows, const struct cli_msg *msg);
/* A list: cli_print_rows in machine formats, else a table of cols. Returns 0 or 1. */
int cli_print_list(struct cli_ctx *ctx, const json_t *rows, const struct cli_msg *msg,
                   const struct cli_column *cols, size_t ncols);
/* The whole configuration, checked as the server checks it (serve, configtest, and commands
 * that open the database themselves); print = list the diagnostics on stderr, else log
 * them. 0, or -errno with nothing to free. */
int cli_server_config(struct cli_ctx *ctx, bool print, struct hs_config *cfg);
/* Loads the CLI config once (diagnostics logged; errors → printed, -EINVAL). */
int cli_config(struct cli_ctx *ctx);
/* Asks "prompt [y/n]" on stderr unless --force. 1 = go ahead, 0 = declined; -1 when stdin
 * is not a terminal (an error has been printed: use --force). */
int cli_confirm(struct cli_ctx *ctx, const char *prompt);

/* ---- REST client (cli_http.c, cli_api.c) ---- */

/* Opens the transport described by cfg: the unix socket, or cli.address with the API key.
 * On failure writes a one-line reason into err. */
int cli_http_open(const struct hs_config *cfg, struct cli_http **out, char *err, size_t errsize);
void cli_http_close(struct cli_http *h);
/* One request; body is a JSON text or NULL. Retries a refused local connection until
 * cli.timeout (the server creates its socket late in start-up). Returns 0 with *status and
 * resp filled, or a negative errno with a one-line reason in err. */
int cli_http_do(struct cli_http *h, const char *method, const char *path, const char *body,
                long *status, struct hs_buf *resp, char *err, size_t errsize);
/* Base URL for cli.address: bare host[:port] gets https://, an explicit scheme is kept. */
char *cli_base_url(const char *address);

/* The message of a non-2xx response: RFC 7807 detail (+ errors[].message), else title,
 * else a short plain-text body, else "unexpected response status: 404 Not Found". */
void cli_problem_message(long status, const char *body, size_t len, char *out, size_t size);
/* REST call: body is stolen (may be NULL). On 2xx stores the parsed reply ({} when empty)
 * in *resp (caller decrefs) and returns 0; otherwise prints the error, returns -1. */
int cli_api(struct cli_ctx *ctx, const char *method, const char *path, json_t *body,
            json_t **resp);
/* path with every %s argument URL-escaped: cli_pathf("/api/v1/user/%s/rename/%s", id, n). */
char *cli_pathf(const char *fmt, ...);

/* ---- helpers (cli_util.c) ---- */

enum cli_user_ref { CLI_USER_BY_ID, CLI_USER_BY_NAME };
/* A purely numeric reference is an id (user names must start with a letter). */
enum cli_user_ref cli_user_ref_kind(const char *ref);
/* Looks one user up by reference (id or name per cli_user_ref_kind, or by name when
 * force_name). Prints the error and returns -1 when not exactly one user matches. */
int cli_user_find(struct cli_ctx *ctx, const char *ref, bool force_name, json_t **user);
/* The database prefix of a key as the user may type it: "hskey-auth-<12>-<secret>",
 * "hskey-auth-<12>-***", "hskey-auth-<12>" or the bare prefix (likewise "hskey-api-");
 * legacy forms lose a trailing "***" (and, for API keys, the ".secret"); a 0.22.3 pre-auth key
 * (48 hex) gives its first 12 chars, which its import made its prefix. */
int cli_key_prefix(const char *kind, const char *text, char *out, size_t size);
/* now + duration ("1h", "90d", ...) as RFC 3339 into buf (>= 40 bytes). */
int cli_expiration(const char *duration, int64_t now_us, char *buf, size_t size);
/* Tailscale's ShortString of "mkey:<hex>"/"nodekey:<hex>": "[" + 5 base64 chars + "]",
 * "" for a zero or unparsable key. */
void cli_key_short(const char *text, char *out, size_t size);
/* RFC 3339 → microseconds; false for null, unparsable or Go's zero time (year 1). */
bool cli_json_time(const json_t *v, int64_t *us);

/* A numeric flag (an ID): *out NULL when not given. A missing required one or one that is
 * not a number prints cobra's usage error ("... flag: not <what>") and returns -1. */
int cli_uint_flag(struct cli_ctx *ctx, const char *name, char shorthand, const char *what,
                  bool required, const char **out);

/* Flags a command needs (NULL-terminated, sorted): when some are not given, prints a usage
 * error naming every missing one ("--a, --b are required") and returns -1. */
int cli_require_flags(struct cli_ctx *ctx, const char *const *names);

/* ---- command handlers ---- */

int cli_cmd_serve(struct cli_ctx *ctx);
int cli_cmd_configtest(struct cli_ctx *ctx);
int cli_cmd_version(struct cli_ctx *ctx);
int cli_cmd_health(struct cli_ctx *ctx);
int cli_cmd_help(struct cli_ctx *ctx); /* cli_help.c */
int cli_cmd_completion(struct cli_ctx *ctx); /* cli_complete.c */
/* "headscale __complete WORD... CURRENT" (the completion scripts' callback): prints the
 * subcommands or flags that may follow the words and start with CURRENT. Returns 0. */
int cli_complete(int nwords, char **words, FILE *out);
int cli_cmd_generate_private_key(struct cli_ctx *ctx);
int cli_cmd_users_create(struct cli_ctx *ctx);
int cli_cmd_users_list(struct cli_ctx *ctx);
int cli_cmd_users_destroy(struct cli_ctx *ctx);
int cli_cmd_users_rename(struct cli_ctx *ctx);
int cli_cmd_preauthkeys_create(struct cli_ctx *ctx);
int cli_cmd_preauthkeys_list(struct cli_ctx *ctx);
int cli_cmd_preauthkeys_expire(struct cli_ctx *ctx);
int cli_cmd_preauthkeys_delete(struct cli_ctx *ctx);
int cli_cmd_apikeys_create(struct cli_ctx *ctx);
int cli_cmd_apikeys_list(struct cli_ctx *ctx);
int cli_cmd_apikeys_expire(struct cli_ctx *ctx);
int cli_cmd_apikeys_delete(struct cli_ctx *ctx);
int cli_cmd_nodes_list(struct cli_ctx *ctx);
int cli_cmd_nodes_list_routes(struct cli_ctx *ctx);
int cli_cmd_nodes_register(struct cli_ctx *ctx);
int cli_cmd_nodes_delete(struct cli_ctx *ctx);
int cli_cmd_nodes_expire(struct cli_ctx *ctx);
int cli_cmd_nodes_rename(struct cli_ctx *ctx);
int cli_cmd_nodes_move(struct cli_ctx *ctx);
int cli_cmd_nodes_tag(struct cli_ctx *ctx);
int cli_cmd_nodes_approve_routes(struct cli_ctx *ctx);
int cli_cmd_auth_register(struct cli_ctx *ctx);
int cli_cmd_auth_approve(struct cli_ctx *ctx);
int cli_cmd_auth_reject(struct cli_ctx *ctx);
int cli_cmd_nodes_backfill_ips(struct cli_ctx *ctx);
int cli_cmd_debug_create_node(struct cli_ctx *ctx);
int cli_cmd_mockoidc(struct cli_ctx *ctx); /* cli_mockoidc.c */
int cli_cmd_routes_list(struct cli_ctx *ctx);
int cli_cmd_routes_enable(struct cli_ctx *ctx);
int cli_cmd_routes_disable(struct cli_ctx *ctx);
int cli_cmd_routes_delete(struct cli_ctx *ctx);
int cli_cmd_policy_get(struct cli_ctx *ctx); /* cli_policy.c */
int cli_cmd_policy_set(struct cli_ctx *ctx);
int cli_cmd_policy_check(struct cli_ctx *ctx);
int cli_cmd_debug_policy(struct cli_ctx *ctx); /* offline: cli_debug.c */

/* Runs a parsed command line with the given streams (cli_main uses stdout/stderr). */
int cli_run(int argc, char **argv, FILE *out, FILE *err);

#endif
