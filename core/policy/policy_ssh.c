/* The `ssh` section: who may SSH to which node as which local user (tailcfg.SSHPolicy, sent
 * per destination node), and `sshTests`, the document's own assertions about it. Checked as
 * Tailscale checks them (the rejections in shared/testdata/policy-conformance/ssh*.jsonl) and
 * compiled per node on demand: a node's rules depend on who it is, and the compiled net has
 * no room for them (each call resolves the rules' sources again, which is cheap next to a
 * netmap). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/policy_internal.h"

#define POL_SSH_MAX_RULES 10000
#define POL_SSH_MAX_TESTS 10000
#define POL_SSH_MAX_DETAIL 2048 /* bytes of failed-test detail in a compile error */

#define NS_PER_SEC INT64_C(1000000000)
#define SSH_CHECK_PERIOD_MAX (168 * 3600 * NS_PER_SEC) /* Tailscale's limit: a week */

static const char action_accept[] = "{\"accept\":true,\"allowAgentForwarding\":true,"
                                    "\"allowLocalPortForwarding\":true,"
                                    "\"allowRemotePortForwarding\":true}";
/* The hold URL the client asks whether to let a `check` session through: the server's own
 * (policy_topology.server_url), or the placeholder host of Tailscale's captures. */
static const char check_path[] =
    "/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER";

struct ssh_rule {
    bool check;                /* action "check", else "accept" */
    struct pol_alias *src;
    size_t nsrc;
    struct pol_alias *dst;
    size_t ndst;
    bool self_dst, other_dst;  /* some dst is autogroup:self / is something else */
    bool root, nonroot;        /* users has "root" / "autogroup:nonroot" */
    char **literals;           /* other users, mapped to themselves */
    size_t nliterals;
    char **lp_domains;         /* users "localpart:*@domain" */
    size_t nlp;
    char *users_json;          /* sshUsers of the rule's common part */
    char *env_json;            /* acceptEnv, NULL when none */
};

enum { ASSERT_ACCEPT, ASSERT_DENY, ASSERT_CHECK, ASSERT_KINDS };

struct ssh_test {
    char *src_text;
    struct pol_alias src;
    struct pol_alias *dst;
    char **dst_text;
    size_t ndst;
    char **users[ASSERT_KINDS]; /* accept, deny, check */
    size_t nusers[ASSERT_KINDS];
};

struct pol_ssh {
    struct ssh_rule *rules;
    size_t nrules;
    struct ssh_test *tests;
    size_t ntests;
};

/* ---- Go durations (checkPeriod is one, and Tailscale's messages print them) ---- */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int64_t unit_ns(const char *u, size_t n)
{
    static const struct {
        const char *name;
        int64_t ns;
    } units[] = {
        { "ns", 1 },          { "us", 1000 },       { "\xc2\xb5s", 1000 }, /* µs */
        { "\xce\xbcs", 1000 } /* μs */, { "ms", 1000000 }, { "s", NS_PER_SEC },
        { "m", 60 * NS_PER_SEC }, { "h", 3600 * NS_PER_SEC },
    };

    for (size_t i = 0; i < HS_ARRAY_LEN(units); i++) {
        if (strlen(units[i].name) == n && memcmp(units[i].name, u, n) == 0)
            return units[i].ns;
    }
    return -1;
}

/* Digits of a fraction while they fit, as Go reads them: f / scale. */
static const char *leading_fraction(const char *s, uint64_t *f, double *scale)
{
    bool overflow = false;

    *f = 0;
    *scale = 1;
    for (; is_digit(*s); s++) {
        uint64_t y;
        if (overflow || *f > ((UINT64_C(1) << 63) - 1) / 10) {
            overflow = true;
            continue;
        }
        y = *f * 10 + (uint64_t)(*s - '0');
        if (y > UINT64_C(1) << 63) {
            overflow = true;
            continue;
        }
        *f = y;
        *scale *= 10;
    }
    return s;
}

/* One "<number><unit>" of a duration into *ns; 0, -EINVAL (invalid), -ENOENT (no unit), or
 * -ERANGE (unknown unit, its slice in *u and *ulen). */
static int duration_part(const char **sp, uint64_t *ns, const char **u, size_t *ulen)
{
    const uint64_t max = UINT64_C(1) << 63;
    const char *s = *sp, *start = s;
    uint64_t v = 0, f = 0;
    double scale = 1;
    int64_t unit;
    bool pre, post = false;

    if (*s != '.' && !is_digit(*s))
        return -EINVAL;
    for (; is_digit(*s); s++) {
        if (v > max / 10)
            return -EINVAL;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > max)
            return -EINVAL;
    }
    pre = s != start;
    if (*s == '.') {
        const char *fs = ++s;
        s = leading_fraction(s, &f, &scale);
        post = s != fs;
    }
    if (!pre && !post)
        return -EINVAL; /* no digits on either side of the point */
    for (*u = s; *s && *s != '.' && !is_digit(*s); s++)
        ;
    *ulen = (size_t)(s - *u);
    if (*ulen == 0)
        return -ENOENT;
    if ((unit = unit_ns(*u, *ulen)) < 0)
        return -ERANGE;
    if (v > max / (uint64_t)unit)
        return -EINVAL;
    v *= (uint64_t)unit;
    if (f > 0 && (v += (uint64_t)((double)f * ((double)unit / scale))) > max)
        return -EINVAL;
    *ns = v;
    *sp = s;
    return 0;
}

/* Go's time.ParseDuration: [-+]?([0-9]*(\.[0-9]*)?[a-z]+)+ or "0", in nanoseconds, with its
 * messages ("time: invalid duration \"abc\""). */
static int go_duration_parse(const char *orig, int64_t *out, char *err, size_t errsize)
{
    const uint64_t max = UINT64_C(1) << 63;
    const char *s = orig, *u = NULL;
    uint64_t d = 0;
    size_t ulen = 0;
    bool neg = false;
    int rc;

    if (*s == '-' || *s == '+')
        neg = *s++ == '-';
    if (strcmp(s, "0") == 0) {
        *out = 0;
        return 0;
    }
    if (!*s)
        return pol__err(err, errsize, "time: invalid duration \"%s\"", orig);
    while (*s) {
        uint64_t v;
        if ((rc = duration_part(&s, &v, &u, &ulen)) == -ENOENT)
            return pol__err(err, errsize, "time: missing unit in duration \"%s\"", orig);
        if (rc == -ERANGE)
            return pol__err(err, errsize, "time: unknown unit \"%.*s\" in duration \"%s\"",
                            (int)ulen, u, orig);
        if (rc < 0 || v > max - d)
            return pol__err(err, errsize, "time: invalid duration \"%s\"", orig);
        d += v;
    }
    if (!neg && d > (uint64_t)INT64_MAX)
        return pol__err(err, errsize, "time: invalid duration \"%s\"", orig);
    *out = neg ? (int64_t)(0 - d) : (int64_t)d;
    return 0;
}

/* Writes the prec fractional digits of *v backwards before w (none if all zero). */
static size_t put_frac(char *buf, size_t w, uint64_t *v, int prec)
{
    bool print = false;

    for (int i = 0; i < prec; i++) {
        unsigned digit = (unsigned)(*v % 10);
        print = print || digit != 0;
        if (print)
            buf[--w] = (char)('0' + digit);
        *v /= 10;
    }
    if (print)
        buf[--w] = '.';
    return w;
}

static size_t put_uint(char *buf, size_t w, uint64_t v)
{
    do {
        buf[--w] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return w;
}

/* Go's Duration.String(): "168h0m1s", "-1m0s", "1.5s", "300ms", "0s". out >= 32 bytes. */
static void go_duration_text(int64_t d, char *out, size_t size)
{
    char buf[40];
    size_t w = sizeof(buf);
    uint64_t u = d < 0 ? 0 - (uint64_t)d : (uint64_t)d;

    buf[--w] = '\0';
    buf[--w] = 's';
    if (u == 0) {
        hs_strlcpy(out, "0s", size);
        return;
    }
    if (u < (uint64_t)NS_PER_SEC) {
        int prec = 6;
        if (u < 1000) {
            prec = 0;
            buf[--w] = 'n';
        } else if (u < 1000000) {
            prec = 3;
            w -= 2;
            memcpy(buf + w, "\xc2\xb5", 2); /* µ */
        } else {
            buf[--w] = 'm';
        }
        w = put_frac(buf, w, &u, prec);
        w = put_uint(buf, w, u);
    } else {
        w = put_frac(buf, w, &u, 9);
        w = put_uint(buf, w, u % 60);
        if ((u /= 60) > 0) {
            buf[--w] = 'm';
            w = put_uint(buf, w, u % 60);
            if ((u /= 60) > 0) {
                buf[--w] = 'h';
                w = put_uint(buf, w, u);
            }
        }
    }
    if (d < 0)
        buf[--w] = '-';
    hs_strlcpy(out, buf + w, size);
}

/* ---- loading rules ---- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* s without surrounding blanks, malloc'd: Tailscale trims every name it reads here. */
static char *trimmed(const char *s)
{
    size_t n;

    while (is_space(*s))
        s++;
    n = strlen(s);
    while (n && is_space(s[n - 1]))
        n--;
    return hs_strndup(s, n);
}

static int only_fields(json_t *o, const char *const *known, char *err, size_t errsize)
{
    const char *key;
    json_t *v;

    json_object_foreach(o, key, v) {
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (!ok)
            return pol__err(err, errsize, "unknown field \"%s\"", key);
    }
    return 0;
}

/* A list of strings (absent and null are empty) into a new array of trimmed copies. */
static int string_list(json_t *o, const char *key, char ***out, size_t *n, char *err,
                       size_t errsize)
{
    json_t *v = json_object_get(o, key), *item;
    size_t i;

    *out = NULL;
    *n = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return pol__err(err, errsize, "\"%s\" must be a list of strings", key);
    json_array_foreach(v, i, item) {
        if (!json_is_string(item))
            return pol__err(err, errsize, "\"%s\" must be a list of strings", key);
    }
    *out = hs_xcalloc(json_array_size(v) + 1, sizeof(**out));
    json_array_foreach(v, i, item)
        (*out)[(*n)++] = trimmed(json_string_value(item));
    return 0;
}

static void strings_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int load_action(json_t *rule, struct ssh_rule *r, char *err, size_t errsize)
{
    json_t *v = json_object_get(rule, "action");
    char *a;
    int rc = 0;

    if (v && !json_is_null(v) && !json_is_string(v))
        return pol__err(err, errsize, "action must be a string");
    a = trimmed(v && json_is_string(v) ? json_string_value(v) : "");
    if (!*a)
        rc = pol__err(err, errsize, "action must be specified");
    else if (strcmp(a, "check") == 0)
        r->check = true;
    else if (strcmp(a, "accept") != 0)
        rc = pol__err(err, errsize, "\"%s\" is not a valid action", a);
    free(a);
    return rc;
}

/* "localpart:*@domain" with a non-empty domain; other "localpart:" forms are plain names. */
static const char *localpart_domain(const char *user)
{
    const char *at;

    if (!hs_has_prefix(user, "localpart:"))
        return NULL;
    user += strlen("localpart:");
    at = strrchr(user, '@');
    if (!at || at != user + 1 || user[0] != '*' || !at[1])
        return NULL;
    return at + 1;
}

/* sshUsers of the rule's common part: root always present (mapped or refused), "*": "=" for
 * autogroup:nonroot, every other name to itself; keys sorted as Go writes a map. */
static char *users_json(const struct ssh_rule *r)
{
    json_t *m = json_object();
    char *s;

    if (r->nonroot)
        json_object_set_new(m, "*", json_string("="));
    json_object_set_new(m, "root", json_string(r->root ? "root" : ""));
    for (size_t i = 0; i < r->nliterals; i++)
        json_object_set_new(m, r->literals[i], json_string(r->literals[i]));
    s = hs_json_dump(m, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(m);
    return s;
}

static int load_users(json_t *rule, struct ssh_rule *r, char *err, size_t errsize)
{
    char **users;
    size_t n;
    int rc;

    if ((rc = string_list(rule, "users", &users, &n, err, errsize)) < 0)
        return rc;
    if (n == 0)
        rc = pol__err(err, errsize, "users must be specified");
    r->literals = hs_xcalloc(n + 1, sizeof(*r->literals));
    r->lp_domains = hs_xcalloc(n + 1, sizeof(*r->lp_domains));
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *u = users[i], *domain;
        if (!*u || strcmp(u, "*") == 0)
            rc = pol__err(err, errsize, "user \"%s\" is not valid", u);
        else if (strcmp(u, "root") == 0)
            r->root = true;
        else if (strcmp(u, "autogroup:nonroot") == 0)
            r->nonroot = true;
        else if ((domain = localpart_domain(u)))
            r->lp_domains[r->nlp++] = hs_strdup(domain);
        else
            r->literals[r->nliterals++] = hs_strdup(u);
    }
    strings_free(users, n);
    if (rc == 0)
        r->users_json = users_json(r);
    return rc;
}

static int load_env(json_t *rule, struct ssh_rule *r, char *err, size_t errsize)
{
    json_t *v = json_object_get(rule, "acceptEnv"), *item;
    size_t i;

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return pol__err(err, errsize, "\"acceptEnv\" must be a list of strings");
    json_array_foreach(v, i, item) {
        if (!json_is_string(item))
            return pol__err(err, errsize, "\"acceptEnv\" must be a list of strings");
        if (!*json_string_value(item))
            return pol__err(err, errsize, "acceptEnv values cannot be empty");
    }
    if (json_array_size(v))
        r->env_json = hs_json_dump(v, JSON_COMPACT);
    return 0;
}

static int load_check_period(json_t *rule, const struct ssh_rule *r, char *err, size_t errsize)
{
    json_t *v = json_object_get(rule, "checkPeriod");
    char text[64];
    int64_t d = 0;
    int rc;

    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) /* Go reads a bare number as a duration without a unit */
        return pol__err(err, errsize, "time: missing unit in duration \"%" JSON_INTEGER_FORMAT
                                      "\"", json_integer_value(v));
    if (!json_is_string(v))
        return pol__err(err, errsize, "checkPeriod must be a string");
    if (strcmp(json_string_value(v), "always") == 0)
        d = 0;
    else if ((rc = go_duration_parse(json_string_value(v), &d, err, errsize)) < 0)
        return rc;
    if (!r->check)
        return pol__err(err, errsize, "checkPeriod is only valid with action \"check\"");
    go_duration_text(d, text, sizeof(text));
    if (d < 0)
        return pol__err(err, errsize, "checkPeriod %s must be a positive duration", text);
    if (d > SSH_CHECK_PERIOD_MAX)
        return pol__err(err, errsize, "checkPeriod %s is above the max (168h)", text);
    return 0;
}

static int load_src(const struct policy *p, const char *s, struct pol_alias *a, char *err,
                    size_t errsize)
{
    char inner[256];
    int rc;

    if ((rc = pol__parse_alias(p, s, a, inner, sizeof(inner))) < 0)
        return pol__err(err, errsize, "src=%s", inner);
    switch (a->kind) {
    case PA_USER:
    case PA_GROUP:
    case PA_TAG:
    case PA_MEMBER:
    case PA_TAGGED:
        return 0;
    default:
        return pol__err(err, errsize, "src \"%s\": SSH sources can be users, groups, tags, "
                                      "autogroup:member or autogroup:tagged", s);
    }
}

static int load_dst(const struct policy *p, const char *s, struct pol_alias *a, char *err,
                    size_t errsize)
{
    char inner[256];
    int rc;

    if ((rc = pol__parse_alias(p, s, a, inner, sizeof(inner))) < 0)
        return pol__err(err, errsize, "dst=%s", inner);
    switch (a->kind) {
    case PA_USER:
    case PA_TAG:
    case PA_MEMBER:
    case PA_TAGGED:
    case PA_SELF:
        return 0;
    case PA_HOST:
    case PA_PREFIX:
        return pol__err(err, errsize, "invalid dst \"%s\"", s);
    case PA_STAR:
        return pol__err(err, errsize, "wildcard (*) is not supported as SSH destination; use "
                                      "autogroup:member, autogroup:tagged, or tags");
    default:
        return pol__err(err, errsize, "dst \"%s\": SSH destinations can be users, tags, "
                                      "autogroup:member, autogroup:tagged or autogroup:self", s);
    }
}

static int load_sides(const struct policy *p, json_t *rule, struct ssh_rule *r, char *err,
                      size_t errsize)
{
    char **names;
    size_t n;
    int rc;

    if ((rc = string_list(rule, "src", &names, &n, err, errsize)) < 0)
        return rc;
    r->src = hs_xcalloc(n + 1, sizeof(*r->src));
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = load_src(p, names[i], &r->src[r->nsrc++], err, errsize);
    strings_free(names, n);
    if (rc < 0 || (rc = string_list(rule, "dst", &names, &n, err, errsize)) < 0)
        return rc;
    r->dst = hs_xcalloc(n + 1, sizeof(*r->dst));
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = load_dst(p, names[i], &r->dst[r->ndst], err, errsize);
        r->self_dst |= rc == 0 && r->dst[r->ndst].kind == PA_SELF;
        r->other_dst |= rc == 0 && r->dst[r->ndst].kind != PA_SELF;
        r->ndst++;
    }
    strings_free(names, n);
    return rc;
}

/* "user:*@domain" (every user at the domain): its domain, else NULL. */
static const char *user_domain(const struct pol_alias *a)
{
    return a->kind == PA_USER && hs_has_prefix(a->name, "user:*@") ? a->name + strlen("user:*@")
                                                                    : NULL;
}

/* Tailscale's model: tags never reach user-owned devices, and a user's devices only that
 * user (autogroup:self is the way to say "each user their own"). */
static int check_sides(const struct ssh_rule *r, char *err, size_t errsize)
{
    bool tagged = false, many = false;
    const char *user = NULL;

    for (size_t i = 0; i < r->nsrc; i++) {
        const struct pol_alias *s = &r->src[i];
        if (user_domain(s) || s->kind == PA_GROUP || s->kind == PA_MEMBER)
            many = true;
        else if (s->kind == PA_TAG || s->kind == PA_TAGGED)
            tagged = true;
        else if (user && strcmp(user, s->name) != 0)
            many = true;
        else
            user = s->name;
    }
    for (size_t i = 0; i < r->ndst; i++) {
        const struct pol_alias *d = &r->dst[i];
        if (d->kind == PA_USER && tagged)
            return pol__err(err, errsize, "tags in SSH source cannot access user-owned devices "
                                          "(%s); use autogroup:tagged or tags as destinations",
                            d->name);
        if (d->kind == PA_USER && (many || !user || strcmp(user, d->name) != 0))
            return pol__err(err, errsize, "user destination requires source to contain only "
                                          "that same user \"%s\"; use autogroup:self instead",
                            d->name);
        if (d->kind == PA_SELF && tagged)
            return pol__err(err, errsize, "autogroup:self destination requires source to "
                                          "contain only users or groups, not tags or "
                                          "autogroup:tagged");
        if (d->kind == PA_MEMBER && tagged)
            return pol__err(err, errsize, "tags in SSH source cannot access autogroup:member "
                                          "(user-owned devices)");
    }
    return 0;
}

static int load_rule(const struct policy *p, json_t *rule, struct ssh_rule *r, char *err,
                     size_t errsize)
{
    static const char *const fields[] = { "action", "src",         "dst",
                                          "users",  "checkPeriod", "acceptEnv", NULL };
    int rc;

    if (!json_is_object(rule))
        return pol__err(err, errsize, "must be an object");
    if ((rc = only_fields(rule, fields, err, errsize)) < 0 ||
        (rc = load_action(rule, r, err, errsize)) < 0 ||
        (rc = load_users(rule, r, err, errsize)) < 0 ||
        (rc = load_env(rule, r, err, errsize)) < 0 ||
        (rc = load_sides(p, rule, r, err, errsize)) < 0 ||
        (rc = check_sides(r, err, errsize)) < 0)
        return rc;
    return load_check_period(rule, r, err, errsize);
}

/* ---- loading sshTests ---- */

/* A test's destination must name hosts one by one: no ports, ranges or the internet. */
static int load_test_dst(const struct policy *p, const char *s, struct pol_alias *a, char *err,
                         size_t errsize)
{
    char inner[256];

    if (hs_has_prefix(s, "tag:") && !pol__tagowner(p, s))
        return pol__err(err, errsize, "SSH tests dst contains unknown tag \"%s\"", s);
    if (pol__parse_alias(p, s, a, inner, sizeof(inner)) < 0)
        return pol__err(err, errsize, "dst=%s", inner);
    if (a->kind == PA_INTERNET || a->kind == PA_DANGER_ALL ||
        ((a->kind == PA_PREFIX || a->kind == PA_HOST) && a->ent.kind != PE_ADDR))
        return pol__err(err, errsize, "SSH tests dst contains disallowed element \"%s\"", s);
    return 0;
}

static int load_test(const struct policy *p, json_t *t, struct ssh_test *st, char *err,
                     size_t errsize)
{
    static const char *const fields[] = { "src", "dst", "accept", "deny", "check", NULL };
    static const char *const kinds[ASSERT_KINDS] = { "accept", "deny", "check" };
    json_t *src = json_object_get(t, "src");
    char inner[256];
    int rc;

    if (!json_is_object(t))
        return pol__err(err, errsize, "must be an object");
    if ((rc = only_fields(t, fields, err, errsize)) < 0)
        return rc;
    if (src && !json_is_null(src) && !json_is_string(src))
        return pol__err(err, errsize, "\"src\" must be a string");
    st->src_text = trimmed(json_is_string(src) ? json_string_value(src) : "");
    if (!*st->src_text)
        return pol__err(err, errsize, "SSH tests entry must have a non-empty src");
    if (pol__parse_alias(p, st->src_text, &st->src, inner, sizeof(inner)) < 0)
        return pol__err(err, errsize, "src=%s", inner);
    for (int k = 0; k < ASSERT_KINDS; k++) {
        if ((rc = string_list(t, kinds[k], &st->users[k], &st->nusers[k], err, errsize)) < 0)
            return rc;
    }
    if ((rc = string_list(t, "dst", &st->dst_text, &st->ndst, err, errsize)) < 0)
        return rc;
    if (st->ndst == 0)
        return pol__err(err, errsize, "SSH tests entry must have at least one dst");
    st->dst = hs_xcalloc(st->ndst + 1, sizeof(*st->dst));
    for (size_t i = 0; i < st->ndst; i++) {
        if ((rc = load_test_dst(p, st->dst_text[i], &st->dst[i], err, errsize)) < 0)
            return rc;
    }
    return 0;
}

int pol__load_ssh(struct policy *p, char *err, size_t errsize)
{
    json_t *rules = json_object_get(p->doc, "ssh"), *tests = json_object_get(p->doc, "sshTests");
    struct pol_ssh *s;
    char inner[512];
    size_t i;
    json_t *v;

    if (json_array_size(rules) > POL_SSH_MAX_RULES)
        return pol__err(err, errsize, "%zu ssh rules is over the limit of %d",
                        json_array_size(rules), POL_SSH_MAX_RULES);
    if (json_array_size(tests) > POL_SSH_MAX_TESTS)
        return pol__err(err, errsize, "%zu sshTests is over the limit of %d",
                        json_array_size(tests), POL_SSH_MAX_TESTS);
    if (!json_array_size(rules) && !json_array_size(tests))
        return 0;
    p->ssh = s = hs_xcalloc(1, sizeof(*s)); /* policy_free() frees it if we fail */
    s->rules = hs_xcalloc(json_array_size(rules) + 1, sizeof(*s->rules));
    json_array_foreach(rules, i, v) {
        if (load_rule(p, v, &s->rules[s->nrules++], inner, sizeof(inner)) < 0)
            return pol__err(err, errsize, "ssh[%zu]: %s", i, inner);
    }
    s->tests = hs_xcalloc(json_array_size(tests) + 1, sizeof(*s->tests));
    json_array_foreach(tests, i, v) {
        if (load_test(p, v, &s->tests[s->ntests++], inner, sizeof(inner)) < 0)
            return pol__err(err, errsize, "sshTests[%zu]: %s", i, inner);
    }
    return 0;
}

static void rule_free(struct ssh_rule *r)
{
    for (size_t i = 0; i < r->nsrc; i++)
        pol__alias_fini(&r->src[i]);
    for (size_t i = 0; i < r->ndst; i++)
        pol__alias_fini(&r->dst[i]);
    free(r->src);
    free(r->dst);
    strings_free(r->literals, r->nliterals);
    strings_free(r->lp_domains, r->nlp);
    free(r->users_json);
    free(r->env_json);
}

static void test_free(struct ssh_test *t)
{
    free(t->src_text);
    pol__alias_fini(&t->src);
    for (size_t i = 0; t->dst && i < t->ndst; i++)
        pol__alias_fini(&t->dst[i]);
    free(t->dst);
    strings_free(t->dst_text, t->ndst);
    for (int k = 0; k < ASSERT_KINDS; k++)
        strings_free(t->users[k], t->nusers[k]);
}

void pol__ssh_free(struct pol_ssh *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nrules; i++)
        rule_free(&s->rules[i]);
    for (size_t i = 0; i < s->ntests; i++)
        test_free(&s->tests[i]);
    free(s->rules);
    free(s->tests);
    free(s);
}

/* ---- compiling for one node ---- */

/* The part of an email after its last '@', or NULL. */
static const char *email_domain(const struct pol_user *u)
{
    const char *at = u->email ? strrchr(u->email, '@') : NULL;

    return at ? at + 1 : NULL;
}

static bool user_in_domain(const struct pol_user *u, const char *domain)
{
    const char *d = email_domain(u);

    return d && strcasecmp(d, domain) == 0;
}

static bool node_in_dst(const struct policy_net *c, const struct ssh_rule *r, size_t i)
{
    for (size_t k = 0; k < r->ndst; k++) {
        if (r->dst[k].kind != PA_SELF && pol__node_in_alias(c, &r->dst[k], i))
            return true;
    }
    return false;
}

/* One principal: a source node's address (with its text, which orders it), and for a
 * user-owned node its owner (uid orders users, user indexes c->users). */
struct ssh_princ {
    uint64_t uid;
    size_t user;
    pol_u128 ip;
    bool v4;
    char text[48];
};

struct princs {
    struct ssh_princ *v;
    size_t n, cap;
};

static void princs_add(struct princs *p, const struct ssh_princ *e)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 8;
        p->v = hs_xrealloc(p->v, p->cap * sizeof(*p->v));
    }
    p->v[p->n++] = *e;
}

static void push_addr(struct princs *p, const struct policy_net *c, pol_u128 ip, bool v4,
                      size_t user)
{
    struct ssh_princ e = { .user = user, .ip = ip, .v4 = v4 };

    e.uid = user != (size_t)-1 ? c->users[user].id : 0;
    pol__addr_text(ip, v4, e.text, sizeof(e.text));
    princs_add(p, &e);
}

static void push_node(struct princs *p, const struct policy_net *c, size_t i, size_t user)
{
    const struct pol_node *n = c->nodes[i];

    for (int f = 0; f < 2; f++) {
        if (n->has[f])
            push_addr(p, c, n->ip[f], f == 0, user);
    }
}

/* IPv4 before IPv6, then as text (Tailscale's order: 100.64.0.11 before 100.64.0.2). */
static int cmp_addr(const void *a, const void *b)
{
    const struct ssh_princ *x = a, *y = b;

    if (x->v4 != y->v4)
        return x->v4 ? -1 : 1;
    return strcmp(x->text, y->text);
}

/* By owner, then address. */
static int cmp_princ(const void *a, const void *b)
{
    const struct ssh_princ *x = a, *y = b;

    if (x->uid != y->uid)
        return x->uid < y->uid ? -1 : 1;
    return cmp_addr(a, b);
}

/* Sorts p and drops repeats: each owner's addresses become a sorted set. */
static void sort_unique(struct princs *p)
{
    size_t m = 0;

    if (p->n == 0)
        return;
    qsort(p->v, p->n, sizeof(*p->v), cmp_princ);
    for (size_t k = 0; k < p->n; k++) {
        if (m == 0 || cmp_princ(&p->v[m - 1], &p->v[k]) != 0)
            p->v[m++] = p->v[k];
    }
    p->n = m;
}

static bool node_in_src(const struct policy_net *c, const struct ssh_rule *r, size_t i)
{
    for (size_t k = 0; k < r->nsrc; k++) {
        if (pol__node_in_alias(c, &r->src[k], i))
            return true;
    }
    return false;
}

/* A rule's sources split as Tailscale sends them: user-owned nodes' addresses grouped by
 * user (ordered by user id, each a sorted set), and tagged nodes' addresses in node order,
 * once per tag the node carries (tag membership is resolved tag by tag). */
struct sources {
    struct princs users, tagged;
};

static void rule_sources(const struct policy_net *c, const struct ssh_rule *r,
                         struct sources *s)
{
    uint64_t *bits = pol__bits_new(c);

    for (size_t k = 0; k < r->nsrc; k++)
        pol__alias_bits(c, &r->src[k], bits);
    for (size_t i = 0; i < c->nnodes; i++) {
        const struct pol_node *nd = c->nodes[i];
        if (!bits[i / 64]) {
            i |= 63; /* a whole word of nodes outside the sources */
            continue;
        }
        if (!pol__bit(bits, i))
            continue;
        if (nd->tagged) {
            for (size_t t = 0; t < nd->ntags; t++)
                push_node(&s->tagged, c, i, (size_t)-1);
        } else if (nd->user != (size_t)-1) {
            push_node(&s->users, c, i, nd->user);
        }
    }
    free(bits);
    sort_unique(&s->users);
}

/* The rule's sources among user u's own (untagged) nodes, as a sorted set. */
static void user_sources(const struct policy_net *c, const struct ssh_rule *r, size_t u,
                         struct princs *out)
{
    const struct pol_list *mine = &c->user_nodes[u];

    for (size_t k = 0; k < mine->n; k++) {
        if (node_in_src(c, r, mine->v[k]))
            push_node(out, c, mine->v[k], u);
    }
    sort_unique(out);
}

/* One rule as node i gets it: principals, and either the rule's own sshUsers or (lp set)
 * the single mapping lp → lp of a localpart:*@domain user. */
struct ssh_out {
    const struct ssh_rule *r;
    struct ssh_princ *p;
    size_t np;
    char *lp;
};

struct ssh_outs {
    struct ssh_out *v;
    size_t n, cap;
};

static void outs_free(struct ssh_outs *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->v[i].p);
        free(o->v[i].lp);
    }
    free(o->v);
    *o = (struct ssh_outs){ 0 };
}

static void out_push(struct ssh_outs *o, const struct ssh_rule *r, const struct ssh_princ *p,
                     size_t np, char *lp)
{
    struct ssh_out *e;

    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 8;
        o->v = hs_xrealloc(o->v, o->cap * sizeof(*o->v));
    }
    e = &o->v[o->n++];
    *e = (struct ssh_out){ .r = r, .np = np, .lp = lp };
    e->p = hs_xcalloc(np + 1, sizeof(*p));
    if (np)
        memcpy(e->p, p, np * sizeof(*p));
}

/* The local part user u logs in as through the rule's localpart:*@domain users, or NULL. */
static char *user_localpart(const struct policy_net *c, const struct ssh_rule *r, size_t u)
{
    const struct pol_user *pu = &c->users[u];

    for (size_t k = 0; k < r->nlp; k++) {
        if (user_in_domain(pu, r->lp_domains[k]))
            return hs_strndup(pu->email, (size_t)(email_domain(pu) - 1 - pu->email));
    }
    return NULL;
}

/* The common rule for these principals and, for a user (u) whose email is in a localpart
 * domain, the rule mapping that user's local part (in this order: the first match wins). */
static void emit(const struct policy_net *c, const struct ssh_rule *r, struct ssh_outs *o,
                 const struct ssh_princ *p, size_t np, size_t u)
{
    char *lp;

    if (np == 0)
        return;
    out_push(o, r, p, np, NULL);
    if (u != (size_t)-1 && r->nlp && (lp = user_localpart(c, r, u)))
        out_push(o, r, p, np, lp);
}

/* The rule's sources that are user u's own nodes, as one rule (and u's localpart rule). */
static void emit_user(const struct policy_net *c, const struct ssh_rule *r, struct ssh_outs *o,
                      size_t u)
{
    struct princs mine = { 0 };

    user_sources(c, r, u, &mine);
    emit(c, r, o, mine.v, mine.n, u);
    free(mine.v);
}

/* Node i as a non-self destination: every source. With localpart users the rule is split
 * per source user, so that each user's own mapping follows its common rule. */
static void emit_all(const struct policy_net *c, const struct ssh_rule *r, struct ssh_outs *o)
{
    struct sources s = { 0 };

    rule_sources(c, r, &s);
    if (r->nlp) {
        for (size_t a = 0, b; a < s.users.n; a = b) {
            for (b = a; b < s.users.n && s.users.v[b].uid == s.users.v[a].uid; b++)
                ;
            emit(c, r, o, s.users.v + a, b - a, s.users.v[a].user);
        }
        emit(c, r, o, s.tagged.v, s.tagged.n, (size_t)-1);
    } else {
        for (size_t k = 0; k < s.tagged.n; k++)
            princs_add(&s.users, &s.tagged.v[k]);
        if (s.users.n) /* one list, sorted as one (a tagged node's repeats included) */
            qsort(s.users.v, s.users.n, sizeof(*s.users.v), cmp_addr);
        emit(c, r, o, s.users.v, s.users.n, (size_t)-1);
    }
    free(s.users.v);
    free(s.tagged.v);
}

/* Rule r as node i gets it. Besides autogroup:self and the other destinations, a rule with
 * localpart users also reaches its own sources: a source node gets the rule for itself (its
 * user's sources when user-owned), as Tailscale sends it. Costs only the rule's size unless
 * node i is concerned. */
static void rule_for_node(const struct policy_net *c, const struct ssh_rule *r, size_t i,
                          struct ssh_outs *o)
{
    const struct pol_node *n = c->nodes[i];
    bool owned = !n->tagged && n->user != (size_t)-1;

    if (r->self_dst && owned)
        emit_user(c, r, o, n->user);
    if (!r->other_dst)
        return;
    if (node_in_dst(c, r, i)) {
        emit_all(c, r, o);
    } else if (r->nlp && node_in_src(c, r, i)) {
        if (n->tagged) {
            struct princs own = { 0 };
            push_node(&own, c, i, (size_t)-1);
            emit(c, r, o, own.v, own.n, (size_t)-1);
            free(own.v);
        } else if (owned) {
            emit_user(c, r, o, n->user);
        }
    }
}

static void node_rules(const struct policy_net *c, size_t i, struct ssh_outs *o)
{
    const struct pol_ssh *s = c->p ? c->p->ssh : NULL;

    *o = (struct ssh_outs){ 0 };
    for (size_t r = 0; s && i < c->nnodes && r < s->nrules; r++)
        rule_for_node(c, &s->rules[r], i, o);
}

/* ---- node i's rules as JSON ---- */

static int put_check(const struct policy_net *c, struct hs_buf *b)
{
    char *url = hs_aprintf("%s%s", c->server_url ? c->server_url : "https://unused", check_path);
    json_t *a = json_pack("{s:s}", "holdAndDelegate", url);
    char *text = hs_json_dump(a, JSON_COMPACT);
    int rc = hs_buf_appendf(b, ",\"action\":%s", text);

    free(text);
    json_decref(a);
    free(url);
    return rc;
}

static int put_out(const struct policy_net *c, struct hs_buf *b, const struct ssh_out *e,
                   bool first)
{
    int rc = hs_buf_puts(b, first ? "{\"principals\":[" : ",{\"principals\":[");

    for (size_t k = 0; k < e->np && rc == 0; k++) { /* puts: this loop is most of a netmap */
        if ((rc = hs_buf_puts(b, k ? ",{\"nodeIP\":\"" : "{\"nodeIP\":\"")) == 0 &&
            (rc = hs_buf_puts(b, e->p[k].text)) == 0)
            rc = hs_buf_puts(b, "\"}");
    }
    if (rc == 0 && e->lp) {
        json_t *m = json_object();
        char *text;
        json_object_set_new(m, e->lp, json_string(e->lp));
        text = hs_json_dump(m, JSON_COMPACT);
        json_decref(m);
        rc = hs_buf_appendf(b, "],\"sshUsers\":%s", text);
        free(text);
    } else if (rc == 0) {
        rc = hs_buf_appendf(b, "],\"sshUsers\":%s", e->r->users_json);
    }
    if (rc == 0)
        rc = e->r->check ? put_check(c, b) : hs_buf_appendf(b, ",\"action\":%s", action_accept);
    if (rc == 0 && e->r->env_json)
        rc = hs_buf_appendf(b, ",\"acceptEnv\":%s", e->r->env_json);
    return rc ? rc : hs_buf_puts(b, "}");
}

/* Check rules go first (the most restrictive first; the client takes the first match), the
 * policy's order kept otherwise. */
int policy_net_ssh(const struct policy_net *c, size_t i, struct hs_buf *out)
{
    struct ssh_outs o;
    size_t start = out->len, written = 0;
    int rc;

    node_rules(c, i, &o);
    rc = hs_buf_puts(out, "[");
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        for (size_t k = 0; k < o.n && rc == 0; k++) {
            if (o.v[k].r->check == (pass == 0))
                rc = put_out(c, out, &o.v[k], written++ == 0);
        }
    }
    if (rc == 0)
        rc = hs_buf_puts(out, "]");
    outs_free(&o);
    if (rc < 0 && out->data) {
        out->len = start;
        out->data[start] = '\0';
    }
    return rc;
}

/* ---- sshTests ---- */

/* Whether the rule's user map lets `user` log in (tailssh: the user's own entry, else "*";
 * "=" maps a user to itself, "" refuses). */
static bool out_maps_user(const struct ssh_out *e, const char *user)
{
    const struct ssh_rule *r = e->r;

    if (!*user)
        return false;
    if (e->lp)
        return strcmp(user, e->lp) == 0;
    if (strcmp(user, "root") == 0)
        return r->root;
    for (size_t k = 0; k < r->nliterals; k++) {
        if (strcmp(r->literals[k], user) == 0)
            return true;
    }
    return r->nonroot;
}

static bool out_has_ip(const struct ssh_out *e, pol_u128 ip)
{
    for (size_t k = 0; k < e->np; k++) {
        if (e->p[k].ip == ip)
            return true;
    }
    return false;
}

/* Whether some rule of the node lets ip in as user: *check set when one of them is `check`
 * (the check rules come first, so that is the one the client would take). */
static bool reaches(const struct ssh_outs *o, pol_u128 ip, const char *user, bool *check)
{
    bool any = false;

    *check = false;
    for (size_t k = 0; k < o->n; k++) {
        if (out_has_ip(&o->v[k], ip) && out_maps_user(&o->v[k], user)) {
            any = true;
            *check |= o->v[k].r->check;
        }
    }
    return any;
}

/* The addresses a test's src stands for, and its user when it names one. */
static void test_sources(const struct policy_net *c, const struct ssh_test *t,
                         struct princs *src, size_t *user)
{
    const struct pol_alias *a = &t->src;

    *user = a->kind == PA_USER ? pol__user_index(c, a->name) : (size_t)-1;
    if ((a->kind == PA_PREFIX || a->kind == PA_HOST) && a->ent.kind == PE_ADDR) {
        push_addr(src, c, a->ent.lo, a->ent.v4, (size_t)-1);
        return;
    }
    for (size_t i = 0; i < c->nnodes; i++) {
        const struct pol_node *n = c->nodes[i];
        bool in = a->kind == PA_PREFIX || a->kind == PA_HOST
                      ? (n->has[0] && pol__ent_contains(&a->ent, n->ip[0])) ||
                            (n->has[1] && pol__ent_contains(&a->ent, n->ip[1]))
                      : pol__node_in_alias(c, a, i);
        if (in)
            push_node(src, c, i, (size_t)-1);
    }
}

/* Whether node i is what a test's dst names. An address names the node with that IPv4
 * address: Tailscale fails a test whose dst is a node's IPv6 address (sshtest-malformed-dst-
 * bare-ipv6), while the same node's IPv4 address passes. */
static bool test_dst_has(const struct policy_net *c, const struct pol_alias *a, size_t user,
                         size_t i)
{
    const struct pol_node *n = c->nodes[i];

    switch (a->kind) {
    case PA_SELF:
        return pol__node_is_users(c, i, user);
    case PA_PREFIX:
    case PA_HOST:
        return a->ent.v4 && n->has[0] && n->ip[0] == a->ent.lo;
    default:
        return pol__node_in_alias(c, a, i);
    }
}

struct test_run {
    const struct policy_net *c;
    const struct ssh_test *t;
    struct hs_buf *detail;
    bool failed;
};

static void test_fail(struct test_run *run, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void test_fail(struct test_run *run, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    hs_buf_appendf(run->detail, "%s%s: %s", run->detail->len ? "; " : "", run->t->src_text,
                   line);
    run->failed = true;
}

/* Every address of the source against one destination node, for every asserted user. */
static void test_node(struct test_run *run, const struct princs *src, size_t d)
{
    static const char *const kinds[ASSERT_KINDS] = { "accept", "deny", "check" };
    const struct ssh_test *t = run->t;
    const char *name = run->c->nodes[d]->name;
    struct ssh_outs o;

    node_rules(run->c, d, &o);
    for (int k = 0; k < ASSERT_KINDS; k++) {
        for (size_t u = 0; u < t->nusers[k]; u++) {
            const char *user = t->users[k][u];
            bool ok = true, any_accept = false;
            for (size_t s = 0; s < src->n && ok; s++) {
                bool check, hit = reaches(&o, src->v[s].ip, user, &check);
                any_accept |= hit;
                ok = k == ASSERT_ACCEPT ? hit : k == ASSERT_DENY ? !hit : check;
            }
            if (!ok)
                test_fail(run, "%s %s -> %s: expected %s, got %s", kinds[k], user, name,
                          k == ASSERT_DENY    ? "DENIED"
                          : k == ASSERT_CHECK ? "ALLOWED via check"
                                              : "ALLOWED",
                          k == ASSERT_DENY ? "ALLOWED"
                          : any_accept     ? "ALLOWED via accept"
                                           : "DENIED");
        }
    }
    outs_free(&o);
}

static void run_test(const struct policy_net *c, const struct ssh_test *t, struct hs_buf *detail,
                     bool *failed)
{
    struct test_run run = { .c = c, .t = t, .detail = detail };
    struct princs src = { 0 };
    uint64_t *seen = hs_xcalloc(c->words + 1, sizeof(uint64_t));
    size_t user;

    test_sources(c, t, &src, &user);
    if (src.n == 0)
        test_fail(&run, "source resolved to no IP addresses");
    else if (!t->nusers[ASSERT_ACCEPT] && !t->nusers[ASSERT_DENY] && !t->nusers[ASSERT_CHECK])
        test_fail(&run, "no accept, deny, or check assertions");
    for (size_t k = 0; k < t->ndst && src.n; k++) {
        bool matched = false;
        for (size_t i = 0; i < c->nnodes; i++) {
            if (!test_dst_has(c, &t->dst[k], user, i))
                continue;
            matched = true;
            if (!pol__bit(seen, i)) {
                pol__set(seen, i);
                test_node(&run, &src, i);
            }
        }
        if (!matched)
            test_fail(&run, "dst \"%s\" resolved to no nodes", t->dst_text[k]);
    }
    *failed |= run.failed;
    free(seen);
    free(src.v);
}

/* The tailnet's own email domain. Tailscale lets user:*@domain and localpart:*@domain name
 * only the domains associated with the tailnet, that is the domain it was created under
 * (its owner's), not every domain its users come from (ssh-d1: example.org, a user's domain,
 * is refused). Without an owner in the topology, the first user (lowest id) stands for it. */
static const char *tailnet_domain(const struct policy_net *c)
{
    const struct pol_user *first = NULL;

    for (size_t u = 0; u < c->nusers; u++) {
        if (email_domain(&c->users[u]) && (!first || c->users[u].id < first->id))
            first = &c->users[u];
    }
    return first ? email_domain(first) : NULL;
}

static int check_domains(const struct policy_net *c, const struct pol_ssh *s, char *err,
                         size_t errsize)
{
    const char *own = tailnet_domain(c);

    for (size_t i = 0; own && i < s->nrules; i++) {
        const struct ssh_rule *r = &s->rules[i];
        const char *bad = NULL;
        for (size_t k = 0; k < r->nsrc && !bad; k++) {
            const char *d = user_domain(&r->src[k]);
            if (d && strcmp(d, own) != 0)
                bad = d;
        }
        for (size_t k = 0; k < r->nlp && !bad; k++) {
            if (strcmp(r->lp_domains[k], own) != 0)
                bad = r->lp_domains[k];
        }
        if (bad)
            return pol__err(err, errsize, "ssh[%zu]: %s is not associated with this Tailnet and "
                                          "cannot be used in user:*@<domain> expressions",
                            i, bad);
    }
    return 0;
}

int pol__check_ssh_tests(const struct policy_net *c, char *err, size_t errsize)
{
    const struct pol_ssh *s = c->p ? c->p->ssh : NULL;
    struct hs_buf detail;
    bool failed = false;
    int rc;

    if (!s)
        return 0;
    if ((rc = check_domains(c, s, err, errsize)) < 0)
        return rc;
    hs_buf_init(&detail, POL_SSH_MAX_DETAIL);
    for (size_t i = 0; i < s->ntests; i++)
        run_test(c, &s->tests[i], &detail, &failed);
    rc = failed ? pol__err(err, errsize, "test(s) failed: sshTests: %s",
                           detail.data ? detail.data : "")
                : 0;
    hs_buf_free(&detail);
    return rc;
}
