/* Helpers shared by the handlers: user references, key prefixes, expirations, short keys. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_internal.h"
#include "keys/keys.h"

/* hskey-{auth,api}-<12>-<secret>: ours hex, headscale 0.28+'s base64url, which has '-' too */
#define CLI_KEY_PREFIX_LEN 12
/* headscale 0.22.3's pre-auth keys: 48 hex chars, imported under their first 12 */
#define CLI_LEGACY_PAK_LEN 48

enum cli_user_ref cli_user_ref_kind(const char *ref)
{
    return ref[0] && strspn(ref, "0123456789") == strlen(ref) ? CLI_USER_BY_ID : CLI_USER_BY_NAME;
}

int cli_user_find(struct cli_ctx *ctx, const char *ref, bool force_name, json_t **user)
{
    bool by_id = !force_name && cli_user_ref_kind(ref) == CLI_USER_BY_ID;
    char *path = cli_pathf(by_id ? "/api/v1/user?id=%s" : "/api/v1/user?name=%s", ref);
    json_t *resp, *users;
    int rc;

    rc = cli_api(ctx, "GET", path, NULL, &resp);
    free(path);
    if (rc < 0)
        return -1;
    users = json_object_get(resp, "users");
    if (json_array_size(users) == 1) {
        *user = json_incref(json_array_get(users, 0));
        rc = 0;
    } else {
        rc = -1;
        if (json_array_size(users) == 0)
            cli_fail(ctx, by_id ? "user with ID %s not found" : "user \"%s\" not found", ref);
        else
            cli_fail(ctx, "more than one user matches \"%s\": use the numeric ID", ref);
    }
    json_decref(resp);
    return rc;
}

int cli_key_prefix(const char *kind, const char *text, char *out, size_t size)
{
    size_t n;

    if (!text)
        return -EINVAL;
    if (hs_has_prefix(text, kind)) {
        text += strlen(kind);
        n = strnlen(text, CLI_KEY_PREFIX_LEN + 1);
        if (n < CLI_KEY_PREFIX_LEN || (n > CLI_KEY_PREFIX_LEN && text[n - 1] != '-'))
            n = strcspn(text, "-");
        else
            n = CLI_KEY_PREFIX_LEN;
    } else if (strlen(text) == CLI_LEGACY_PAK_LEN && strspn(text, "0123456789abcdef") ==
                                                         CLI_LEGACY_PAK_LEN) {
        n = CLI_KEY_PREFIX_LEN; /* as the import keyed it */
    } else {
        n = strcspn(text, ".");
        if (n >= 3 && strcmp(text + n - 3, "***") == 0 && text[n] == '\0')
            n -= 3;
    }
    if (n == 0 || n >= size)
        return -EINVAL;
    memcpy(out, text, n);
    out[n] = '\0';
    return 0;
}

int cli_expiration(const char *duration, int64_t now_us, char *buf, size_t size)
{
    int64_t us;
    int rc = hs_parse_duration(duration, &us);

    if (rc < 0)
        return rc;
    if (us > INT64_MAX - now_us)
        return -ERANGE;
    hs_format_rfc3339(now_us + us, buf, size);
    return 0;
}

void cli_key_short(const char *text, char *out, size_t size)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const uint8_t zero[KEY_LEN];
    uint8_t key[KEY_LEN];
    const char *colon = text ? strchr(text, ':') : NULL;
    uint32_t v;

    out[0] = '\0';
    if (!colon || size < 8 || hs_hex_decode(colon + 1, strlen(colon + 1), key, KEY_LEN) < 0 ||
        memcmp(key, zero, KEY_LEN) == 0)
        return;
    /* The first 5 base64 characters only depend on the first 4 bytes. */
    v = (uint32_t)key[0] << 16 | (uint32_t)key[1] << 8 | key[2];
    snprintf(out, size, "[%c%c%c%c%c]", b64[v >> 18], b64[(v >> 12) & 63], b64[(v >> 6) & 63],
             b64[v & 63], b64[key[3] >> 2]);
}

bool cli_json_time(const json_t *v, int64_t *us)
{
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;

    if (!s || hs_has_prefix(s, "0001-01-01T"))
        return false;
    return hs_parse_rfc3339(s, us) == 0;
}
