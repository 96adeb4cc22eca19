/* OIDC: talking to the provider with libcurl — discovery (OpenID Connect Discovery 1.0), the
 * key set, the token endpoint and userinfo. Every answer is bounded in size and time. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/oidc_internal.h"

struct http_call {
    const char *url;
    const char *form;   /* POST body (x-www-form-urlencoded), or NULL for GET */
    const char *bearer; /* Authorization: Bearer, or NULL */
    const char *basic_user, *basic_pass; /* HTTP basic auth, or NULL */
};

static size_t on_data(char *p, size_t size, size_t nmemb, void *arg)
{
    struct hs_buf *b = arg;
    size_t n = size * nmemb;

    return hs_buf_append(b, p, n) < 0 ? 0 : n; /* 0 fails the transfer */
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void setup(CURL *c, const struct http_call *call, struct hs_buf *body,
                  struct curl_slist **hdrs)
{
    curl_easy_setopt(c, CURLOPT_URL, call->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)OIDC_HTTP_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)OIDC_MAX_RESPONSE);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "headscale-c/" HS_VERSION);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    *hdrs = curl_slist_append(NULL, "Accept: application/json");
    if (call->form)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, call->form);
    if (call->basic_user) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, call->basic_user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, call->basic_pass);
    }
    if (call->bearer) {
        char *h = hs_aprintf("Authorization: Bearer %s", call->bearer);
        *hdrs = curl_slist_append(*hdrs, h);
        free(h);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
}

/* Performs call; *out is the JSON object it answered with (any status: OAuth errors come as
 * JSON with 400/401). */
static int http_json(const struct http_call *call, json_t **out, long *status, char *why,
                     size_t whysize)
{
    struct hs_buf body;
    struct curl_slist *hdrs = NULL;
    char err[160];
    CURLcode cc;
    CURL *c;
    int rc = 0;

    pthread_once(&curl_once, curl_init_once);
    if (!(c = curl_easy_init()))
        return snprintf(why, whysize, "cannot initialise libcurl"), -EIO;
    hs_buf_init(&body, OIDC_MAX_RESPONSE);
    setup(c, call, &body, &hdrs);
    cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    if (cc == CURLE_WRITE_ERROR || cc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(why, whysize, "%s: the answer is larger than %u bytes", call->url,
                 OIDC_MAX_RESPONSE);
        rc = -E2BIG;
    } else if (cc != CURLE_OK) {
        snprintf(why, whysize, "%s: %s", call->url, curl_easy_strerror(cc));
        rc = -EHOSTUNREACH;
    } else if (!(*out = hs_json_load(body.data ? body.data : "", body.len, OIDC_MAX_RESPONSE,
                                     err, sizeof(err))) ||
               !json_is_object(*out)) {
        json_decref(*out);
        snprintf(why, whysize, "%s: the answer (HTTP %ld) is not a JSON object%s%s", call->url,
                 *status, *out ? "" : ": ", *out ? "" : err);
        rc = -EBADMSG;
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    hs_buf_free(&body);
    return rc;
}

static int get_json(const char *url, json_t **out, char *why, size_t whysize)
{
    struct http_call call = { .url = url };
    long status = 0;
    int rc = http_json(&call, out, &status, why, whysize);

    if (rc == 0 && status != 200) {
        snprintf(why, whysize, "%s: HTTP %ld", url, status);
        json_decref(*out);
        rc = -EIO;
    }
    return rc;
}

/* An http(s) URL without spaces or control characters (it ends up in a Location header). */
static bool is_http_url(const char *s)
{
    if (!s || !(hs_has_prefix(s, "https://") || hs_has_prefix(s, "http://")))
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return false;
    return true;
}

/* The document must name our issuer exactly (OpenID Connect Discovery §4.3) and the
 * endpoints a code login needs. */
static int check_discovery(const struct auth_oidc_rp *rp, const json_t *d, char *why,
                           size_t whysize)
{
    static const char *const needed[] = { "authorization_endpoint", "token_endpoint", "jwks_uri",
                                          NULL };

    if (!hs_streq(hs_json_str(d, "issuer"), rp->issuer)) {
        snprintf(why, whysize, "the discovery document names the issuer \"%.200s\", not %s",
                 hs_json_str(d, "issuer") ? hs_json_str(d, "issuer") : "(none)",
                 rp->issuer);
        return -EBADMSG;
    }
    for (size_t i = 0; needed[i]; i++)
        if (!is_http_url(hs_json_str(d, needed[i]))) {
            snprintf(why, whysize, "the discovery document has no http(s) %s", needed[i]);
            return -EBADMSG;
        }
    return 0;
}

static int fetch_jwks(const char *uri, json_t **out, char *why, size_t whysize)
{
    int rc = get_json(uri, out, why, whysize);

    if (rc == 0 && !json_is_array(json_object_get(*out, "keys"))) {
        snprintf(why, whysize, "%s: the key set has no \"keys\" list", uri);
        json_decref(*out);
        rc = -EBADMSG;
    }
    return rc;
}

int auth_oidc_rp_discover(struct auth_oidc_rp *rp, char *why, size_t whysize)
{
    const char *iss = rp->issuer;
    int n = (int)strlen(iss) - (*iss && iss[strlen(iss) - 1] == '/'); /* no "//" */
    char *url;
    json_t *d = NULL, *keys = NULL;
    int rc;

    pthread_mutex_lock(&rp->mu);
    rc = rp->discovery ? 1 : 0;
    pthread_mutex_unlock(&rp->mu);
    if (rc)
        return 0;
    url = hs_aprintf("%.*s/.well-known/openid-configuration", n, iss);
    rc = get_json(url, &d, why, whysize);
    free(url);
    if (rc == 0)
        rc = check_discovery(rp, d, why, whysize);
    if (rc == 0)
        rc = fetch_jwks(hs_json_str(d, "jwks_uri"), &keys, why, whysize);
    if (rc < 0) {
        json_decref(d);
        return rc;
    }
    pthread_mutex_lock(&rp->mu);
    if (!rp->discovery) { /* another login may have got there first */
        rp->discovery = d;
        rp->jwks = keys;
        d = keys = NULL;
    }
    pthread_mutex_unlock(&rp->mu);
    json_decref(d);
    json_decref(keys);
    return 0;
}

json_t *oidc__discovery(struct auth_oidc_rp *rp)
{
    json_t *d;

    pthread_mutex_lock(&rp->mu);
    d = json_incref(rp->discovery);
    pthread_mutex_unlock(&rp->mu);
    return d;
}

json_t *oidc__jwks(struct auth_oidc_rp *rp)
{
    json_t *k;

    pthread_mutex_lock(&rp->mu);
    k = json_incref(rp->jwks);
    pthread_mutex_unlock(&rp->mu);
    return k;
}

int oidc__jwks_refresh(struct auth_oidc_rp *rp, char *why, size_t whysize)
{
    json_t *d = oidc__discovery(rp), *keys;
    int64_t now = hs_monotonic_us();
    bool due;
    int rc;

    pthread_mutex_lock(&rp->mu);
    due = !rp->jwks_fetched_us || now - rp->jwks_fetched_us >= OIDC_JWKS_MIN_REFETCH_US;
    if (due)
        rp->jwks_fetched_us = now;
    pthread_mutex_unlock(&rp->mu);
    if (!d || !due) {
        json_decref(d);
        snprintf(why, whysize, "the provider's key set was fetched moments ago");
        return -EAGAIN;
    }
    rc = fetch_jwks(hs_json_str(d, "jwks_uri"), &keys, why, whysize);
    json_decref(d);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&rp->mu);
    json_decref(rp->jwks);
    rp->jwks = keys;
    pthread_mutex_unlock(&rp->mu);
    return 0;
}

/* Appends key=value, percent-encoded, to a form. */
static void form_add(struct hs_buf *f, const char *key, const char *value)
{
    char *v = curl_easy_escape(NULL, value, 0);

    hs_buf_appendf(f, "%s%s=%s", f->len ? "&" : "", key, v ? v : "");
    curl_free(v);
}

/* client_secret_post when the provider lists it, else client_secret_basic (RFC 6749 §2.3.1's
 * default, which every provider takes). */
static bool secret_in_form(const json_t *d)
{
    const json_t *m;
    size_t i;

    json_array_foreach(json_object_get(d, "token_endpoint_auth_methods_supported"), i, m)
        if (hs_streq(json_string_value(m), "client_secret_post"))
            return true;
    return false;
}

int oidc__exchange(struct auth_oidc_rp *rp, const char *code, const char *verifier, json_t **out,
                   char *why, size_t whysize)
{
    json_t *d = oidc__discovery(rp);
    struct http_call call = { 0 };
    struct hs_buf form;
    long status = 0;
    int rc;

    hs_buf_init(&form, 16384);
    form_add(&form, "grant_type", "authorization_code");
    form_add(&form, "code", code);
    form_add(&form, "redirect_uri", rp->redirect_uri);
    form_add(&form, "client_id", rp->client_id);
    if (secret_in_form(d))
        form_add(&form, "client_secret", rp->client_secret);
    else
        call.basic_user = rp->client_id, call.basic_pass = rp->client_secret;
    if (verifier && *verifier)
        form_add(&form, "code_verifier", verifier);
    call.url = hs_json_str(d, "token_endpoint");
    call.form = form.data;
    rc = http_json(&call, out, &status, why, whysize);
    if (rc == 0 && status != 200) {
        snprintf(why, whysize, "the provider refused the code (HTTP %ld): %.100s %.200s", status,
                 hs_json_str(*out, "error") ?: "", hs_json_str(*out, "error_description") ?: "");
        json_decref(*out);
        rc = -EACCES;
    }
    hs_buf_free(&form);
    json_decref(d);
    return rc;
}

json_t *oidc__userinfo(struct auth_oidc_rp *rp, const char *access_token)
{
    json_t *d = oidc__discovery(rp), *info = NULL;
    struct http_call call = { .url = hs_json_str(d, "userinfo_endpoint"),
                              .bearer = access_token };
    char why[256];
    long status = 0;

    if (is_http_url(call.url) && access_token &&
        http_json(&call, &info, &status, why, sizeof(why)) == 0 && status != 200) {
        json_decref(info);
        info = NULL;
    }
    json_decref(d);
    return info;
}
