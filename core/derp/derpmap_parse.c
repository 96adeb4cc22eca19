/* derp: parsing DERP map documents (headscale's derp.yaml, or tailcfg.DERPMap JSON).
 *
 * Two steps. First the text becomes a generic JSON tree: JSON through jansson (byte cap,
 * duplicate keys refused), YAML by walking libyaml events with an explicit, capped stack
 * (no recursion on input depth, no aliases, a cap on the number of nodes). YAML scalars stay
 * strings there. Then a fixed schema (regions > region > nodes > node, never deeper) converts
 * that tree into tailcfg JSON with Go field names, matching keys case-insensitively as Go's
 * encoding/json does, so "regionid" (yaml.v3's lower-cased names) and "RegionID" both work. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "derp/derp_internal.h"

#define DERPMAP_MAX_DEPTH 16
#define DERPMAP_MAX_ITEMS (1u << 18) /* YAML nodes per document */
#define DERPMAP_MAX_INT 0x7fffffff /* Go int fields, kept to int32 */

/* ---- YAML → generic tree ---- */

struct ytree {
    json_t *stack[DERPMAP_MAX_DEPTH]; /* open containers, borrowed from root */
    char *key[DERPMAP_MAX_DEPTH];     /* mapping at that level: key waiting for its value */
    int depth;
    size_t items;
    json_t *root;
    char *err;
    size_t errsize;
};

static int yfail(struct ytree *t, const yaml_event_t *ev, const char *what)
{
    snprintf(t->err, t->errsize, "line %zu: %s", (size_t)ev->start_mark.line + 1, what);
    return -EINVAL;
}

static bool yexpects_key(const struct ytree *t)
{
    return t->depth > 0 && json_is_object(t->stack[t->depth - 1]) && !t->key[t->depth - 1];
}

static json_t *yscalar(const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;

    if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        (n == 0 || strcmp(v, "~") == 0 || strcasecmp(v, "null") == 0))
        return json_null();
    return json_stringn(v, n);
}

/* Attaches v (stolen) to the open container, or makes it the root. */
static int yadd(struct ytree *t, const yaml_event_t *ev, json_t *v)
{
    json_t *parent;
    int d = t->depth - 1;

    if (!v)
        return yfail(t, ev, "invalid UTF-8 or out of memory");
    if (++t->items > DERPMAP_MAX_ITEMS) {
        json_decref(v);
        return yfail(t, ev, "too many YAML nodes");
    }
    if (d < 0) {
        if (t->root) {
            json_decref(v);
            return yfail(t, ev, "more than one document");
        }
        t->root = v;
        return 0;
    }
    parent = t->stack[d];
    if (json_is_array(parent))
        return json_array_append_new(parent, v) == 0 ? 0 : yfail(t, ev, "out of memory");
    if (json_object_get(parent, t->key[d])) {
        json_decref(v);
        return yfail(t, ev, "duplicate key");
    }
    json_object_set_new(parent, t->key[d], v);
    free(t->key[d]);
    t->key[d] = NULL;
    return 0;
}

static int yopen(struct ytree *t, const yaml_event_t *ev, json_t *c)
{
    int rc;

    if (yexpects_key(t)) {
        json_decref(c);
        return yfail(t, ev, "a mapping key must be a scalar");
    }
    if (t->depth >= DERPMAP_MAX_DEPTH) {
        json_decref(c);
        return yfail(t, ev, "nesting too deep");
    }
    if ((rc = yadd(t, ev, c)) < 0)
        return rc;
    t->stack[t->depth] = c;
    t->key[t->depth] = NULL;
    t->depth++;
    return 0;
}

static int yevent(struct ytree *t, const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        if (yexpects_key(t)) {
            t->key[t->depth - 1] = hs_strndup((const char *)ev->data.scalar.value,
                                              ev->data.scalar.length);
            return 0;
        }
        return yadd(t, ev, yscalar(ev));
    case YAML_MAPPING_START_EVENT:
        return yopen(t, ev, json_object());
    case YAML_SEQUENCE_START_EVENT:
        return yopen(t, ev, json_array());
    case YAML_MAPPING_END_EVENT:
    case YAML_SEQUENCE_END_EVENT:
        t->depth--;
        return 0;
    case YAML_ALIAS_EVENT:
        return yfail(t, ev, "YAML aliases are not supported");
    default:
        return 0;
    }
}

static json_t *yaml_tree(const char *text, size_t len, char *err, size_t errsize)
{
    struct ytree t = { .err = err, .errsize = errsize };
    yaml_parser_t p;
    yaml_event_t ev;
    bool done = false;
    int rc = 0;

    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    while (rc == 0 && !done) {
        if (!yaml_parser_parse(&p, &ev)) {
            snprintf(err, errsize, "line %zu: %s", (size_t)p.problem_mark.line + 1,
                     p.problem ? p.problem : "YAML syntax error");
            rc = -EINVAL;
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        rc = yevent(&t, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    for (int i = 0; i < DERPMAP_MAX_DEPTH; i++)
        free(t.key[i]);
    if (rc < 0) {
        json_decref(t.root);
        return NULL;
    }
    if (!t.root)
        snprintf(err, errsize, "empty document");
    return t.root;
}

/* ---- schema: generic tree → tailcfg.DERPMap ---- */

enum ftype { F_STR, F_INT, F_BOOL, F_FLOAT };

struct field {
    const char *name; /* Go field name = JSON name */
    enum ftype type;
    bool always;      /* emitted (zero value) even when absent */
};

/* tailcfg.DERPRegion, without Nodes (converted separately). */
static const struct field region_fields[] = {
    { "RegionID", F_INT, true },  { "RegionCode", F_STR, true }, { "RegionName", F_STR, true },
    { "Latitude", F_FLOAT, false }, { "Longitude", F_FLOAT, false }, { "Avoid", F_BOOL, false },
    { "NoMeasureNoHome", F_BOOL, false },
};

/* tailcfg.DERPNode. */
static const struct field node_fields[] = {
    { "Name", F_STR, true },       { "RegionID", F_INT, true },
    { "HostName", F_STR, true },   { "CertName", F_STR, false },
    { "IPv4", F_STR, true },       { "IPv6", F_STR, true },
    { "STUNPort", F_INT, true },   { "STUNOnly", F_BOOL, true },
    { "DERPPort", F_INT, true },   { "InsecureForTests", F_BOOL, true },
    { "STUNTestIP", F_STR, false }, { "CanPort80", F_BOOL, true },
};

/* Case-insensitive member lookup (Go's encoding/json and the lower-cased YAML names). */
static json_t *member(const json_t *obj, const char *name)
{
    const char *k;
    json_t *v;

    json_object_foreach((json_t *)obj, k, v) {
        if (strcasecmp(k, name) == 0)
            return v;
    }
    return NULL;
}

static json_t *conv_int(const json_t *in)
{
    int64_t v;

    if (json_is_integer(in))
        v = json_integer_value(in);
    else if (!json_is_string(in) || hs_parse_i64(json_string_value(in), &v) < 0)
        return NULL;
    return v >= -DERPMAP_MAX_INT && v <= DERPMAP_MAX_INT ? json_integer(v) : NULL;
}

static json_t *conv_bool(const json_t *in)
{
    bool b;

    if (json_is_boolean(in))
        return json_incref((json_t *)in);
    if (!json_is_string(in) || hs_parse_bool(json_string_value(in), &b) < 0)
        return NULL;
    return json_boolean(b);
}

static json_t *conv_float(const json_t *in)
{
    const char *s;
    char *end;
    double d;

    if (json_is_number(in))
        return json_real(json_number_value(in));
    if (!json_is_string(in))
        return NULL;
    s = json_string_value(in);
    d = strtod(s, &end);
    return *s && !*end ? json_real(d) : NULL;
}

static json_t *zero_value(enum ftype type)
{
    switch (type) {
    case F_STR:
        return json_string("");
    case F_INT:
        return json_integer(0);
    case F_BOOL:
        return json_false();
    default:
        return json_real(0);
    }
}

/* NULL on a type mismatch. Absent/null input gives the zero value. */
static json_t *conv_field(enum ftype type, const json_t *in)
{
    if (!in || json_is_null(in))
        return zero_value(type);
    switch (type) {
    case F_STR:
        return json_is_string(in) ? json_incref((json_t *)in) : NULL;
    case F_INT:
        return conv_int(in);
    case F_BOOL:
        return conv_bool(in);
    default:
        return conv_float(in);
    }
}

static bool is_zero(const json_t *v)
{
    return json_is_false(v) || (json_is_string(v) && !*json_string_value(v)) ||
           (json_is_number(v) && json_number_value(v) == 0);
}

/* Copies the fields of spec from in to a new object; NULL with err on a bad type. */
static json_t *conv_struct(const json_t *in, const struct field *spec, size_t n, const char *what,
                           char *err, size_t errsize)
{
    json_t *out = json_object();

    for (size_t i = 0; i < n; i++) {
        json_t *v = conv_field(spec[i].type, member(in, spec[i].name));
        if (!v) {
            snprintf(err, errsize, "%s: %s has the wrong type", what, spec[i].name);
            json_decref(out);
            return NULL;
        }
        if (spec[i].always || !is_zero(v))
            json_object_set_new(out, spec[i].name, v);
        else
            json_decref(v);
    }
    return out;
}

static int conv_nodes(const json_t *in, json_t *region, const char *what, char *err,
                      size_t errsize)
{
    json_t *nodes = json_array(), *n, *node;
    json_int_t rid = json_integer_value(json_object_get(region, "RegionID"));
    size_t i;

    json_object_set_new(region, "Nodes", nodes);
    if (!in || json_is_null(in))
        return 0;
    if (!json_is_array(in)) {
        snprintf(err, errsize, "%s: nodes must be a list", what);
        return -EINVAL;
    }
    json_array_foreach(in, i, n) {
        if (!json_is_object(n)) {
            snprintf(err, errsize, "%s: node %zu is not a mapping", what, i);
            return -EINVAL;
        }
        if (!(node = conv_struct(n, node_fields, HS_ARRAY_LEN(node_fields), what, err, errsize)))
            return -EINVAL;
        if (json_integer_value(json_object_get(node, "RegionID")) == 0)
            json_object_set_new(node, "RegionID", json_integer(rid));
        json_array_append_new(nodes, node);
    }
    return 0;
}

/* A region; json null stays null (a later source deletes that region id, as headscale 0.29). */
static json_t *conv_region(const json_t *in, uint64_t id, char *err, size_t errsize)
{
    char what[32];
    json_t *r;

    if (json_is_null(in))
        return json_null();
    snprintf(what, sizeof(what), "region %llu", (unsigned long long)id);
    if (!json_is_object(in)) {
        snprintf(err, errsize, "%s is not a mapping", what);
        return NULL;
    }
    r = conv_struct(in, region_fields, HS_ARRAY_LEN(region_fields), what, err, errsize);
    if (!r)
        return NULL;
    if (json_integer_value(json_object_get(r, "RegionID")) == 0)
        json_object_set_new(r, "RegionID", json_integer((json_int_t)id));
    if (conv_nodes(member(in, "Nodes"), r, what, err, errsize) < 0) {
        json_decref(r);
        return NULL;
    }
    return r;
}

static json_t *conv_map(const json_t *root, char *err, size_t errsize)
{
    json_t *in = json_is_object(root) ? member(root, "Regions") : NULL;
    json_t *out, *regions, *omit, *v;
    const char *k;

    if (!json_is_object(in)) {
        snprintf(err, errsize, "the top level needs a \"regions\" mapping");
        return NULL;
    }
    regions = json_object();
    json_object_foreach(in, k, v) {
        uint64_t id;
        char key[24];
        json_t *r;

        if (hs_parse_u64(k, DERPMAP_MAX_INT, &id) < 0 || id == 0) {
            snprintf(err, errsize, "region id \"%.32s\" is not a positive integer", k);
            json_decref(regions);
            return NULL;
        }
        if (!(r = conv_region(v, id, err, errsize))) {
            json_decref(regions);
            return NULL;
        }
        snprintf(key, sizeof(key), "%llu", (unsigned long long)id);
        json_object_set_new(regions, key, r);
    }
    out = json_pack("{s:o}", "Regions", regions);
    omit = conv_bool(member(root, "omitDefaultRegions"));
    if (json_is_true(omit))
        json_object_set_new(out, "omitDefaultRegions", omit);
    else
        json_decref(omit);
    return out;
}

static bool looks_like_json(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n')
            return text[i] == '{';
    }
    return false;
}

json_t *derpmap_parse(const char *text, size_t len, char *err, size_t errsize)
{
    json_t *tree, *out;

    if (len > DERPMAP_MAX_BYTES) {
        snprintf(err, errsize, "document of %zu bytes exceeds the limit of %u", len,
                 DERPMAP_MAX_BYTES);
        return NULL;
    }
    if (looks_like_json(text, len))
        tree = hs_json_load(text, len, DERPMAP_MAX_BYTES, err, errsize);
    else
        tree = yaml_tree(text, len, err, errsize);
    if (!tree)
        return NULL;
    out = conv_map(tree, err, errsize);
    json_decref(tree);
    return out;
}
