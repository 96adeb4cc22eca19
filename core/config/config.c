/* config: finding the file, walking its keys, HEADSCALE_* overrides, defaults, diagnostics.
 *
 * Precedence for every key (one row of config__keys): $HEADSCALE_<KEY>, then
 * $HEADSCALE_<0.22 KEY>, then the key in the file, then its 0.22.3 name in the file, then
 * the default (the 0.22.3 default when the file uses the old layout). */
#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_internal.h"

#define CONFIG_MAX_ENV_NAME 160

/* ---- diagnostics ---- */

/* What `headscale <cli command>` needs (hscontrol/types/config.go LoadCLIConfig). */
static bool cli_key(const char *key)
{
    static const char *const sections[] = { "cli", "log" };

    if (!strcasecmp(key, "unix_socket") || !strcasecmp(key, "disable_check_updates"))
        return true;
    for (size_t i = 0; i < HS_ARRAY_LEN(sections); i++) {
        size_t n = strlen(sections[i]);
        if (!strncasecmp(key, sections[i], n) && (key[n] == '\0' || key[n] == '.'))
            return true;
    }
    return false;
}

void config__diag(struct load_ctx *c, enum config_diag_level lvl, const char *key, int line,
                  const char *fmt, ...)
{
    struct config_diags *d = c->diags;
    struct config_diag *g;
    va_list ap;

    if (lvl == CONFIG_ERROR && c->purpose == CONFIG_FOR_CLI && key && !cli_key(key))
        lvl = CONFIG_WARNING; /* the CLI must work with an incomplete server config */
    if (d->n == d->cap) { /* doubling: a file with thousands of bad entries stays linear */
        d->cap = d->cap ? 2 * d->cap : 16;
        d->v = hs_xrealloc(d->v, d->cap * sizeof(*d->v));
    }
    g = &d->v[d->n++];
    *g = (struct config_diag){ .level = lvl, .line = line, .key = hs_strdup(key) };
    g->file = line > 0 ? hs_strdup(c->file) : NULL;
    va_start(ap, fmt);
    if (vasprintf(&g->msg, fmt, ap) < 0)
        abort();
    va_end(ap);
    if (lvl == CONFIG_ERROR)
        d->nerrors++;
}

static void tree_report(void *arg, enum config_diag_level lvl, const char *key, int line,
                        const char *msg)
{
    config__diag(arg, lvl, key, line, "%s", msg);
}

/* Values parsed from an env variable: their lines mean nothing to the user. */
static void env_report(void *arg, enum config_diag_level lvl, const char *key, int line,
                       const char *msg)
{
    struct load_ctx *c = arg;
    (void)key;
    (void)line;
    config__diag(c, lvl, c->cur_name, 0, "%s (from $%s)", msg, c->cur_env);
}

void config_diags_free(struct config_diags *d)
{
    for (size_t i = 0; d && i < d->n; i++) {
        free(d->v[i].file);
        free(d->v[i].key);
        free(d->v[i].msg);
    }
    if (d) {
        free(d->v);
        *d = (struct config_diags){ 0 };
    }
}

/* "<file>:<line>: <key>: <msg>", leaving out whatever is unknown. */
static void diag_format(const struct config_diag *g, char *buf, size_t size)
{
    size_t n = 0;

    buf[0] = '\0';
    if (g->file && g->line > 0)
        n += (size_t)snprintf(buf, size, "%s:%d: ", g->file, g->line);
    else if (g->line > 0)
        n += (size_t)snprintf(buf, size, "line %d: ", g->line);
    if (g->key && n < size)
        n += (size_t)snprintf(buf + n, size - n, "%s: ", g->key);
    if (n < size)
        snprintf(buf + n, size - n, "%s", g->msg);
}

void config_diags_print(const struct config_diags *d, FILE *f)
{
    char buf[1024];

    for (size_t i = 0; i < d->n; i++) {
        diag_format(&d->v[i], buf, sizeof(buf));
        fprintf(f, "%s: %s\n", d->v[i].level == CONFIG_ERROR ? "error" : "warning", buf);
    }
}

void config_diags_log(const struct config_diags *d)
{
    char buf[1024];

    for (size_t i = 0; i < d->n; i++) {
        diag_format(&d->v[i], buf, sizeof(buf));
        if (d->v[i].level == CONFIG_ERROR)
            log_errorx("config: %s", buf);
        else
            log_warnx("config: %s", buf);
    }
}

/* ---- walking the file ---- */

static void note_key(struct load_ctx *c, const struct ynode *n, const char *path)
{
    bool alias;
    int i = config__key_find(path, &alias);
    const struct ynode **slot = alias ? &c->file_leg[i] : &c->file_cur[i];

    if (alias || (config__keys[i].flags & KF_LEGACY))
        c->cfg->legacy = true;
    if (n->null)
        return; /* "key:" with no value: keep the default, as viper does */
    if (*slot) {
        /* Same key twice through different spellings (e.g. "a.b: 1" and "a: {b: 2}"). */
        config__diag(c, CONFIG_ERROR, path, ynode_line(n), "duplicate key (first given on "
                     "line %d)", ynode_line(*slot));
        return;
    }
    *slot = n;
}

/* Recursion is bounded: ytree_parse refused anything deeper than CONFIG_MAX_DEPTH. */
static void walk_map(struct load_ctx *c, const struct ynode *map, const char *prefix)
{
    char path[CONFIG_MAX_KEY_LEN];
    bool alias;

    for (const struct ynode *n = map->child; n; n = n->next) {
        int len = snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", n->key);
        if (len < 0 || (size_t)len >= sizeof(path)) {
            config__diag(c, CONFIG_WARNING, NULL, n->key_line, "unknown key (name too long)");
            continue;
        }
        if (config__key_find(path, &alias) >= 0) {
            note_key(c, n, path);
        } else if (config__is_section(path)) {
            if (n->kind == YN_MAP)
                walk_map(c, n, path);
            else if (!n->null)
                config__diag(c, CONFIG_ERROR, path, n->key_line, "expected a mapping, got %s",
                             n->kind == YN_SEQ ? "a list" : "a single value");
        } else {
            config__diag(c, CONFIG_WARNING, path, n->key_line, "unknown key");
        }
    }
}

/* ---- environment ---- */

static void env_name(const char *key, char *out, size_t size)
{
    size_t n = (size_t)snprintf(out, size, "HEADSCALE_");

    for (; *key && n + 1 < size; key++)
        out[n++] = *key == '.' ? '_' : (char)toupper((unsigned char)*key);
    out[n] = '\0';
}

/* viper ignores variables that are set but empty. */
static const char *env_get(const char *key, char *name, size_t size)
{
    const char *v;

    if (!key)
        return NULL;
    env_name(key, name, size);
    v = getenv(name);
    return v && *v ? v : NULL;
}

static void env_scan_legacy(struct load_ctx *c)
{
    char name[CONFIG_MAX_ENV_NAME];

    for (size_t i = 0; i < config__nkeys; i++) {
        const struct key_def *k = &config__keys[i];
        if (env_get(k->legacy, name, sizeof(name)) ||
            ((k->flags & KF_LEGACY) && env_get(k->name, name, sizeof(name))))
            c->cfg->legacy = true;
    }
}

static bool env_is_key(const char *var)
{
    char name[CONFIG_MAX_ENV_NAME];

    for (size_t i = 0; i < config__nkeys; i++) {
        env_name(config__keys[i].name, name, sizeof(name));
        if (strcmp(name, var) == 0)
            return true;
        if (config__keys[i].legacy) {
            env_name(config__keys[i].legacy, name, sizeof(name));
            if (strcmp(name, var) == 0)
                return true;
        }
    }
    return false;
}

/* A HEADSCALE_* variable that no key reads: viper passes over it in silence, which hides a
 * misspelt override (HEADSCALE_DNS_BASEDOMAIN). HEADSCALE_CONFIG names the file. */
static void warn_unknown_env(struct load_ctx *c)
{
    char var[CONFIG_MAX_ENV_NAME];

    if (c->purpose != CONFIG_FOR_SERVER)
        return;
    for (char **e = environ; *e; e++) {
        size_t n = strcspn(*e, "=");
        if (strncmp(*e, "HEADSCALE_", 10) != 0 || n >= sizeof(var))
            continue;
        memcpy(var, *e, n);
        var[n] = '\0';
        if (strcmp(var, "HEADSCALE_CONFIG") != 0 && !env_is_key(var))
            config__diag(c, CONFIG_WARNING, var, 0,
                         "unknown environment variable: no config key reads it");
    }
}

static bool structured(enum key_type t)
{
    return t == K_SPLIT || t == K_RECORDS || t == K_KV;
}

/* A mapping or a list of records from the environment is written as YAML/JSON
 * (HEADSCALE_DNS_NAMESERVERS_SPLIT='{"corp.example": ["10.0.0.1"]}'). */
static int apply_env(struct load_ctx *c, const struct key_def *k, const char *val)
{
    struct ytree t = { 0 };
    int rc;

    if (!structured(k->type))
        return config__apply(c, k, ytree_scalar(&c->scratch, val));
    rc = ytree_parse(val, strnlen(val, CONFIG_MAX_FILE_BYTES + 1), &t, env_report, c);
    if (rc == 0 && !t.root)
        rc = -EINVAL;
    if (rc == 0)
        rc = config__apply(c, k, t.root);
    ytree_free(&t);
    return rc;
}

/* ---- applying one key ---- */

static bool try_env(struct load_ctx *c, size_t i)
{
    const struct key_def *k = &config__keys[i];
    char cur[CONFIG_MAX_ENV_NAME], leg[CONFIG_MAX_ENV_NAME];
    const char *vc = env_get(k->name, cur, sizeof(cur));
    const char *vl = env_get(k->legacy, leg, sizeof(leg));

    if (!vc && !vl)
        return false;
    if (vc && vl)
        config__diag(c, CONFIG_WARNING, k->name, 0, "both $%s and $%s are set; using $%s",
                     cur, leg, cur);
    c->cur_name = vc ? k->name : k->legacy;
    c->cur_env = vc ? cur : leg;
    if (apply_env(c, k, vc ? vc : vl) < 0)
        return false;
    c->src[i] = SRC_ENV;
    c->used_name[i] = c->cur_name;
    return true;
}

static bool try_file(struct load_ctx *c, size_t i)
{
    const struct key_def *k = &config__keys[i];
    const struct ynode *cur = c->file_cur[i], *leg = c->file_leg[i], *n = cur ? cur : leg;

    if (!n)
        return false;
    if (cur && leg)
        config__diag(c, CONFIG_WARNING, k->legacy, ynode_line(leg),
                     "ignored: %s (line %d) sets the same thing", k->name, ynode_line(cur));
    c->cur_name = cur ? k->name : k->legacy;
    c->cur_env = NULL;
    c->line[i] = ynode_line(n);
    c->used_name[i] = c->cur_name;
    if (config__apply(c, k, n) < 0)
        return false;
    c->src[i] = SRC_FILE;
    return true;
}

static const char *default_of(const struct load_ctx *c, const struct key_def *k)
{
    return c->cfg->legacy && k->legacy_def ? k->legacy_def : k->def;
}

static void apply_default(struct load_ctx *c, size_t i)
{
    const struct key_def *k = &config__keys[i];
    const char *def = default_of(c, k);

    c->src[i] = SRC_DEFAULT;
    if (!def)
        return;
    c->cur_name = k->name;
    c->cur_env = NULL;
    config__apply(c, k, ytree_scalar(&c->scratch, def));
}

static void apply_all(struct load_ctx *c)
{
    /* A bad value is reported and the next source (in the end the default) stands in, so
     * the returned config is always usable. */
    for (size_t i = 0; i < config__nkeys; i++) {
        if (!try_env(c, i) && !try_file(c, i))
            apply_default(c, i);
        c->cur_env = NULL;
    }
}

/* ---- keys that do nothing here ---- */

/* A key without a field has only its text: a boolean that says what we do anyway. */
static bool nofield_at_idle(const struct load_ctx *c, size_t i)
{
    const struct key_def *k = &config__keys[i];
    const struct ynode *n = c->file_cur[i] ? c->file_cur[i] : c->file_leg[i];
    char env[CONFIG_MAX_ENV_NAME];
    const char *s = c->src[i] == SRC_ENV         ? env_get(k->name, env, sizeof(env))
                    : n && n->kind == YN_SCALAR ? n->str
                                                : NULL;
    bool given, idle;

    return k->idle && s && hs_parse_bool(s, &given) == 0 && hs_parse_bool(k->idle, &idle) == 0 &&
           given == idle;
}

/* True when key i holds what its idle value (by default: its default) gives it. */
static bool at_idle(struct load_ctx *c, size_t i)
{
    const struct key_def *k = &config__keys[i];
    const char *v = k->idle ? k->idle : default_of(c, k);
    struct hs_config ref = { .dir = c->cfg->dir, .legacy = c->cfg->legacy };
    struct load_ctx rc = *c;
    bool same;

    if (k->type == K_NOFIELD)
        return nofield_at_idle(c, i);
    rc.cfg = &ref;
    rc.cur_name = k->name;
    rc.cur_env = NULL;
    if (v)
        config__apply(&rc, k, ytree_scalar(&c->scratch, v));
    same = config__field_equal(k, c->cfg, &ref);
    config__free_fields(&ref); /* ref.dir is borrowed: not a table field */
    return same;
}

void config__warn_inert(struct load_ctx *c)
{
    if (c->purpose != CONFIG_FOR_SERVER)
        return; /* serve and configtest say it; every CLI command need not */
    for (size_t i = 0; i < config__nkeys; i++) {
        const struct key_def *k = &config__keys[i];
        if (!k->inert || c->src[i] == SRC_DEFAULT || at_idle(c, i))
            continue;
        config__diag(c, CONFIG_WARNING, c->used_name[i], c->line[i], "has no effect%s: %s",
                     (k->flags & KF_NEVER) ? "" : " yet", k->inert);
    }
}

/* Every string field ends up non-NULL, so consumers test *s instead of s && *s. */
static void fill_empty_strings(struct hs_config *cfg)
{
    for (size_t i = 0; i < config__nkeys; i++) {
        const struct key_def *k = &config__keys[i];
        char **p = (char **)((char *)cfg + k->off);
        switch (k->type) {
        case K_STR: case K_PATH: case K_PATH_ENV: case K_ADDR: case K_CHOICE: case K_SSL:
        case K_IP:
            if (!*p)
                *p = hs_strdup("");
            break;
        default:
            break;
        }
    }
}

/* ---- loading ---- */

static void ctx_init(struct load_ctx *c, struct hs_config *cfg, struct config_diags *d,
                     enum config_purpose purpose, const char *file)
{
    size_t n = config__nkeys;

    *c = (struct load_ctx){ .cfg = cfg, .diags = d, .purpose = purpose, .file = file };
    c->file_cur = hs_xcalloc(n, sizeof(*c->file_cur));
    c->file_leg = hs_xcalloc(n, sizeof(*c->file_leg));
    c->src = hs_xcalloc(n, sizeof(*c->src));
    c->line = hs_xcalloc(n, sizeof(*c->line));
    c->used_name = hs_xcalloc(n, sizeof(*c->used_name));
}

static void ctx_fini(struct load_ctx *c)
{
    free(c->file_cur);
    free(c->file_leg);
    free(c->src);
    free(c->line);
    free(c->used_name);
    ytree_free(&c->scratch);
}

static void parse_text(struct load_ctx *c, const char *text, size_t len, struct ytree *t)
{
    if (len > CONFIG_MAX_FILE_BYTES) {
        config__diag(c, CONFIG_ERROR, NULL, 0, "%s is larger than %u bytes",
                     c->file ? c->file : "config", CONFIG_MAX_FILE_BYTES);
        return;
    }
    if (ytree_parse(text, len, t, tree_report, c) < 0 || !t->root)
        return;
    if (t->root->kind != YN_MAP) {
        if (!t->root->null)
            config__diag(c, CONFIG_ERROR, NULL, t->root->line,
                         "the top level must be a mapping of keys");
        return;
    }
    walk_map(c, t->root, "");
}

/* text may be NULL (no file): defaults and env only. */
static int load_common(const char *text, size_t len, const char *file, const char *dir,
                       enum config_purpose purpose, struct hs_config *out,
                       struct config_diags *d)
{
    struct load_ctx c;
    struct ytree tree = { 0 };

    out->path = hs_strdup(file);
    out->dir = hs_strdup(dir);
    ctx_init(&c, out, d, purpose, file);
    if (text)
        parse_text(&c, text, len, &tree);
    env_scan_legacy(&c);
    warn_unknown_env(&c);
    apply_all(&c);
    fill_empty_strings(out);
    config__check(&c);
    config__warn_inert(&c);
    ytree_free(&tree);
    ctx_fini(&c);
    return d->nerrors ? -EINVAL : 0;
}

int config_load_text(const char *text, size_t len, const char *dir, enum config_purpose purpose,
                     struct hs_config *out, struct config_diags *diags)
{
    *out = (struct hs_config){ 0 };
    *diags = (struct config_diags){ 0 };
    return load_common(text ? text : "", text ? len : 0, NULL, dir, purpose, out, diags);
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && !S_ISDIR(st.st_mode);
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* viper tries its extensions in this order in each directory: json before yaml. */
static char *search_dir(const char *dir)
{
    static const char *const names[] = { "config.json", "config.yaml", "config.yml" };

    for (size_t i = 0; i < HS_ARRAY_LEN(names); i++) {
        char *p = hs_aprintf("%s/%s", dir, names[i]);
        if (is_file(p))
            return p;
        free(p);
    }
    return NULL;
}

static char *search_default(void)
{
    const char *home = getenv("HOME");
    char *p = search_dir("/etc/headscale"), *h;

    if (!p && home && *home) {
        h = hs_aprintf("%s/.headscale", home);
        p = search_dir(h);
        free(h);
    }
    return p ? p : search_dir(".");
}

/* The directory of path, made absolute so relative paths survive a chdir. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *d = slash ? hs_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : hs_strdup(".");
    char *abs = realpath(d, NULL);

    if (abs) {
        free(d);
        return abs;
    }
    return d;
}

static void read_error(struct load_ctx *c, const char *path, int rc)
{
    if (rc == -E2BIG)
        config__diag(c, CONFIG_ERROR, NULL, 0, "%s: larger than %u bytes", path,
                     CONFIG_MAX_FILE_BYTES);
    else
        config__diag(c, CONFIG_ERROR, NULL, 0, "%s: cannot read: %s", path, hs_strerror(rc));
}

/* Picks the file; NULL with a diagnostic when there is none. */
static char *find_file(struct load_ctx *c, const char *explicit_path)
{
    char *p;

    if (!explicit_path) {
        if (!(p = search_default()))
            config__diag(c, CONFIG_WARNING, NULL, 0, "no config.yaml found in /etc/headscale, "
                         "$HOME/.headscale or the working directory; using defaults");
        return p;
    }
    if (is_dir(explicit_path)) {
        if (!(p = search_dir(explicit_path)))
            config__diag(c, CONFIG_ERROR, NULL, 0, "%s: no config.yaml in this directory",
                         explicit_path);
        return p;
    }
    if (!is_file(explicit_path)) {
        config__diag(c, CONFIG_ERROR, NULL, 0, "%s: config file not found", explicit_path);
        return NULL;
    }
    return hs_strdup(explicit_path);
}

int config_load(const char *path_override, enum config_purpose purpose, struct hs_config *out,
                struct config_diags *diags)
{
    const char *env = getenv("HEADSCALE_CONFIG");
    const char *explicit_path = path_override && *path_override ? path_override
                                : env && *env                   ? env
                                                                : NULL;
    struct load_ctx pre;
    char *path, *text = NULL, *dir = NULL;
    size_t len = 0;
    int rc;

    *out = (struct hs_config){ 0 };
    *diags = (struct config_diags){ 0 };
    /* A throwaway context so find_file/read_error report through the same channel. */
    pre = (struct load_ctx){ .diags = diags, .purpose = purpose };
    path = find_file(&pre, explicit_path);
    if (path && (rc = hs_read_file(path, CONFIG_MAX_FILE_BYTES, &text, &len)) < 0) {
        read_error(&pre, path, rc);
        text = NULL;
    }
    if (path)
        dir = dir_of(path);
    rc = load_common(text, len, text ? path : NULL, text ? dir : NULL, purpose, out, diags);
    free(text);
    free(dir);
    free(path);
    return rc;
}

void config_free(struct hs_config *cfg)
{
    if (!cfg)
        return;
    config__free_fields(cfg);
    free(cfg->path);
    free(cfg->dir);
    *cfg = (struct hs_config){ 0 };
}
