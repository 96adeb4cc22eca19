/* The REST replies (protojson: camelCase members, 64-bit integers as strings, RFC 3339 times,
 * enums by name) reshaped into what headscale's CLI prints: its gRPC structs through Go's
 * encoding/json (snake_case members in declaration order, zero values left out, integers as
 * numbers, a Timestamp as {"seconds","nanos"}, enums as numbers) or through yaml.v3 (every
 * member, named by its lowercased Go field name, nil as null). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli_internal.h"

enum proto_type {
    P_STR,   /* string */
    P_U64,   /* uint64: a string or number in REST */
    P_BOOL,
    P_TIME,  /* *timestamppb.Timestamp */
    P_ENUM,  /* RegisterMethod */
    P_STRV,  /* []string */
    P_MSG,   /* pointer to another message */
};

struct proto_field {
    const char *name; /* the proto (JSON tag) name; REST uses its lowerCamelCase form */
    enum proto_type type;
    const struct cli_msg *msg; /* P_MSG */
};

struct cli_msg {
    const struct proto_field *fields;
    size_t nfields;
};

#define MSG(name, ...)                                                                   \
    static const struct proto_field name##_fields[] = { __VA_ARGS__ };                   \
    const struct cli_msg name = { name##_fields, HS_ARRAY_LEN(name##_fields) }

static const char *const register_methods[] = {
    "REGISTER_METHOD_UNSPECIFIED", "REGISTER_METHOD_AUTH_KEY", "REGISTER_METHOD_CLI",
    "REGISTER_METHOD_OIDC",
};

/* headscale 0.29.3 (gen/go/headscale/v1). */
MSG(cli_msg_user, { "id", P_U64, NULL }, { "name", P_STR, NULL }, { "created_at", P_TIME, NULL },
    { "display_name", P_STR, NULL }, { "email", P_STR, NULL }, { "provider_id", P_STR, NULL },
    { "provider", P_STR, NULL }, { "profile_pic_url", P_STR, NULL });
MSG(cli_msg_pre_auth_key, { "user", P_MSG, &cli_msg_user }, { "id", P_U64, NULL },
    { "key", P_STR, NULL }, { "reusable", P_BOOL, NULL }, { "ephemeral", P_BOOL, NULL },
    { "used", P_BOOL, NULL }, { "expiration", P_TIME, NULL }, { "created_at", P_TIME, NULL },
    { "acl_tags", P_STRV, NULL });
MSG(cli_msg_api_key, { "id", P_U64, NULL }, { "prefix", P_STR, NULL },
    { "expiration", P_TIME, NULL }, { "created_at", P_TIME, NULL },
    { "last_seen", P_TIME, NULL });
MSG(cli_msg_node, { "id", P_U64, NULL }, { "machine_key", P_STR, NULL },
    { "node_key", P_STR, NULL }, { "disco_key", P_STR, NULL }, { "ip_addresses", P_STRV, NULL },
    { "name", P_STR, NULL }, { "user", P_MSG, &cli_msg_user }, { "last_seen", P_TIME, NULL },
    { "expiry", P_TIME, NULL }, { "pre_auth_key", P_MSG, &cli_msg_pre_auth_key },
    { "created_at", P_TIME, NULL }, { "register_method", P_ENUM, NULL },
    { "given_name", P_STR, NULL }, { "online", P_BOOL, NULL },
    { "approved_routes", P_STRV, NULL }, { "available_routes", P_STRV, NULL },
    { "subnet_routes", P_STRV, NULL }, { "tags", P_STRV, NULL });
MSG(cli_msg_backfill, { "changes", P_STRV, NULL });
MSG(cli_msg_health, { "database_connectivity", P_BOOL, NULL });
/* A reply with no members (ExpireApiKeyResponse, DeleteUserResponse, ...). */
const struct cli_msg cli_msg_empty = { NULL, 0 };

/* headscale 0.22.3, for the commands only it has (routes). */
MSG(cli_msg_legacy_user, { "id", P_STR, NULL }, { "name", P_STR, NULL },
    { "created_at", P_TIME, NULL });
MSG(cli_msg_legacy_pre_auth_key, { "user", P_STR, NULL }, { "id", P_STR, NULL },
    { "key", P_STR, NULL }, { "reusable", P_BOOL, NULL }, { "ephemeral", P_BOOL, NULL },
    { "used", P_BOOL, NULL }, { "expiration", P_TIME, NULL }, { "created_at", P_TIME, NULL },
    { "acl_tags", P_STRV, NULL });
MSG(cli_msg_machine, { "id", P_U64, NULL }, { "machine_key", P_STR, NULL },
    { "node_key", P_STR, NULL }, { "disco_key", P_STR, NULL }, { "ip_addresses", P_STRV, NULL },
    { "name", P_STR, NULL }, { "user", P_MSG, &cli_msg_legacy_user },
    { "last_seen", P_TIME, NULL }, { "last_successful_update", P_TIME, NULL },
    { "expiry", P_TIME, NULL }, { "pre_auth_key", P_MSG, &cli_msg_legacy_pre_auth_key },
    { "created_at", P_TIME, NULL }, { "register_method", P_ENUM, NULL },
    { "forced_tags", P_STRV, NULL }, { "invalid_tags", P_STRV, NULL },
    { "valid_tags", P_STRV, NULL }, { "given_name", P_STR, NULL }, { "online", P_BOOL, NULL });
MSG(cli_msg_route, { "id", P_U64, NULL }, { "machine", P_MSG, &cli_msg_machine },
    { "prefix", P_STR, NULL }, { "advertised", P_BOOL, NULL }, { "enabled", P_BOOL, NULL },
    { "is_primary", P_BOOL, NULL }, { "created_at", P_TIME, NULL },
    { "updated_at", P_TIME, NULL }, { "deleted_at", P_TIME, NULL });

/* "ip_addresses" → "ipAddresses" (REST), or "ipaddresses" (yaml.v3's lowercased Go name). */
static void key_form(const char *proto, bool camel, char *out, size_t size)
{
    size_t n = 0;
    bool up = false;

    for (const char *p = proto; *p && n + 1 < size; p++) {
        if (*p == '_') {
            up = camel;
            continue;
        }
        out[n++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
        up = false;
    }
    out[n] = '\0';
}

/* RFC 3339 → seconds and nanoseconds since the epoch; false when it does not parse. */
static bool parse_time(const char *s, long long *sec, long long *nsec)
{
    struct tm tm = { 0 };
    const char *p = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    long long frac = 0;
    int digits = 0, off = 0;

    if (!p)
        return false;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 9)
                frac = frac * 10 + (*p - '0');
    for (int d = digits; d < 9; d++)
        frac *= 10;
    if (*p == '+' || *p == '-') {
        int hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
            return false;
        off = (*p == '-' ? -1 : 1) * (hh * 3600 + mm * 60);
    } else if (*p != 'Z' && *p != 'z') {
        return false;
    }
    *sec = (long long)timegm(&tm) - off;
    *nsec = frac;
    return true;
}

static json_t *timestamp(const json_t *v, bool yaml)
{
    long long sec, nsec;
    json_t *t;

    if (!parse_time(json_string_value(v), &sec, &nsec))
        return NULL;
    t = json_object();
    if (yaml || sec)
        json_object_set_new(t, "seconds", json_integer(sec));
    if (yaml || nsec)
        json_object_set_new(t, "nanos", json_integer(nsec));
    return t;
}

static long long u64_value(const json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v);
    return json_is_string(v) ? strtoll(json_string_value(v), NULL, 10) : 0;
}

static long long enum_value(const json_t *v)
{
    for (size_t i = 0; i < HS_ARRAY_LEN(register_methods); i++)
        if (hs_streq(json_string_value(v), register_methods[i]))
            return (long long)i;
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

/* A list of strings, or NULL when empty (encoding/json leaves it out; yaml.v3 prints []). */
static json_t *strings(const json_t *v, bool yaml)
{
    if (json_array_size(v) == 0)
        return yaml ? json_array() : NULL;
    return json_deep_copy(v);
}

/* One member in its printed form, or NULL to leave it out (yaml: null). */
static json_t *field_value(const struct proto_field *f, const json_t *v, bool yaml)
{
    const char *s;

    switch (f->type) {
    case P_STR:
        s = json_string_value(v);
        return s && (*s || yaml) ? json_string(s) : yaml ? json_string("") : NULL;
    case P_U64:
        return u64_value(v) || yaml ? json_integer(u64_value(v)) : NULL;
    case P_ENUM:
        return enum_value(v) || yaml ? json_integer(enum_value(v)) : NULL;
    case P_BOOL:
        return json_is_true(v) ? json_true() : yaml ? json_false() : NULL;
    case P_TIME:
        return timestamp(v, yaml);
    case P_STRV:
        return strings(v, yaml);
    case P_MSG:
        return json_is_object(v) ? cli_proto(v, f->msg, yaml) : NULL;
    }
    return NULL;
}

json_t *cli_proto(const json_t *rest, const struct cli_msg *m, bool yaml)
{
    json_t *out = json_object();
    char key[64];

    for (size_t i = 0; i < m->nfields; i++) {
        const struct proto_field *f = &m->fields[i];
        json_t *v;

        key_form(f->name, true, key, sizeof(key));
        v = field_value(f, json_object_get(rest, key), yaml);
        if (!v && !yaml)
            continue;
        if (yaml)
            key_form(f->name, false, key, sizeof(key));
        json_object_set_new(out, yaml ? key : f->name, v ? v : json_null());
    }
    return out;
}

json_t *cli_proto_list(const json_t *rest, const struct cli_msg *m, bool yaml)
{
    json_t *out, *v;
    size_t i;

    if (json_array_size(rest) == 0)
        return yaml ? json_array() : json_null();
    out = json_array();
    json_array_foreach(rest, i, v)
        json_array_append_new(out, cli_proto(v, m, yaml));
    return out;
}
