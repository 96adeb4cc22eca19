/* One ACME order, start to end (RFC 8555 §7): directory, nonce, account (found again by its
 * key when it exists), order, each authorization's challenge, finalize with a CSR, download
 * of the chain. Blocking: it runs on the acme worker thread. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "acme/acme_internal.h"

#define ACME_NONCE_RETRIES 5  /* badNonce answers in a row before giving up */
#define ACME_POLL_MAX 120     /* polls of one authorization or order */
#define ACME_POLL_PAUSE_MS 1000
#define ACME_POLL_PAUSE_MAX_S 10

struct session {
    const struct acme_flow *fl;
    struct acme_directory dir;
    char nonce[ACME_MAX_NONCE];
    char kid[ACME_MAX_URL];
    char thumb[ACME_THUMB_LEN + 1];
    char *err;
    size_t errsize;
};

static int stopped(struct session *s)
{
    if (!atomic_load(s->fl->stop))
        return 0;
    snprintf(s->err, s->errsize, "stopped");
    return -ECANCELED;
}

/* Sleeps ms in short steps so that a stop is seen. */
static int nap(struct session *s, long ms)
{
    struct timespec step = { 0, 100 * 1000000L };

    for (long left = ms; left > 0; left -= 100) {
        if (stopped(s) < 0)
            return -ECANCELED;
        nanosleep(&step, NULL);
    }
    return stopped(s);
}

static int fetch_nonce(struct session *s)
{
    struct acme_reply r;
    int rc;

    if ((rc = acme__http(s->dir.new_nonce, "", s->fl->stop, &r, s->err, s->errsize)) < 0)
        return rc;
    hs_buf_free(&r.body);
    if (!r.nonce[0]) {
        snprintf(s->err, s->errsize, "%s: no Replay-Nonce (HTTP %ld)", s->dir.new_nonce,
                 r.status);
        return -EPROTO;
    }
    memcpy(s->nonce, r.nonce, sizeof(s->nonce));
    return 0;
}

/* The server's complaint about url into err; the type for the caller to judge. */
static void problem(struct session *s, const char *url, struct acme_reply *r, char *type,
                    size_t typesize)
{
    char detail[512];

    type[0] = '\0';
    if (acme__parse_problem(r->body.data, r->body.len, type, typesize, detail,
                            sizeof(detail)) < 0)
        snprintf(detail, sizeof(detail), "no problem document");
    snprintf(s->err, s->errsize, "%s: HTTP %ld: %s", url, r->status, detail);
}

/* A signed POST (payload NULL: POST-as-GET). The key goes as a jwk until the account is
 * known (kid empty). A badNonce answer (RFC 8555 §6.5) is retried with the nonce it brought.
 * On success r is the caller's to free. */
static int post(struct session *s, const char *url, const char *payload, struct acme_reply *r)
{
    struct hs_buf jws;
    char type[64];
    int rc;

    for (int attempt = 0; attempt < ACME_NONCE_RETRIES; attempt++) {
        if (!s->nonce[0] && (rc = fetch_nonce(s)) < 0)
            return rc;
        hs_buf_init(&jws, 2 * ACME_MAX_BODY);
        rc = acme__jws(s->fl->account, s->kid[0] ? s->kid : NULL, s->nonce, url, payload,
                       &jws);
        s->nonce[0] = '\0'; /* spent */
        if (rc == 0)
            rc = acme__http(url, jws.data, s->fl->stop, r, s->err, s->errsize);
        else
            snprintf(s->err, s->errsize, "cannot sign the request to %s", url);
        hs_buf_free(&jws);
        if (rc < 0)
            return rc;
        memcpy(s->nonce, r->nonce, sizeof(s->nonce));
        if (r->status >= 200 && r->status < 300)
            return 0;
        problem(s, url, r, type, sizeof(type));
        hs_buf_free(&r->body);
        if (strcmp(type, "badNonce") != 0)
            return -EPROTO;
    }
    return -EPROTO;
}

static int load_directory(struct session *s)
{
    struct acme_reply r;
    char why[256];
    int rc;

    if ((rc = acme__http(s->fl->directory_url, NULL, s->fl->stop, &r, s->err, s->errsize)) <
        0)
        return rc;
    if (r.status != 200)
        snprintf(why, sizeof(why), "HTTP %ld", r.status);
    rc = r.status == 200 ? acme__parse_directory(r.body.data, r.body.len, &s->dir, why,
                                                 sizeof(why))
                         : -EPROTO;
    hs_buf_free(&r.body);
    if (rc < 0)
        snprintf(s->err, s->errsize, "directory %s: %s", s->fl->directory_url, why);
    return rc;
}

/* newAccount finds the account of this key, or makes it (RFC 8555 §7.3). */
static int account(struct session *s)
{
    json_t *p = json_pack("{s:b}", "termsOfServiceAgreed", 1);
    struct acme_reply r;
    char *payload;
    int rc;

    if (s->fl->email && *s->fl->email) {
        char *mailto = hs_aprintf("mailto:%s", s->fl->email);
        json_object_set_new(p, "contact", json_pack("[s]", mailto));
        free(mailto);
    }
    payload = hs_json_dump(p, JSON_COMPACT);
    json_decref(p);
    rc = post(s, s->dir.new_account, payload, &r);
    free(payload);
    if (rc < 0)
        return rc;
    hs_buf_free(&r.body);
    if (!r.location[0]) {
        snprintf(s->err, s->errsize, "%s: the account has no Location", s->dir.new_account);
        return -EPROTO;
    }
    memcpy(s->kid, r.location, sizeof(s->kid));
    return 0;
}

/* POST-as-GET of an order (or its first creation when payload is set) parsed into o. */
static int order_fetch(struct session *s, const char *url, const char *payload,
                       struct acme_order *o, char *location)
{
    struct acme_reply r;
    char why[256];
    int rc;

    if ((rc = post(s, url, payload, &r)) < 0)
        return rc;
    if ((rc = acme__parse_order(r.body.data, r.body.len, o, why, sizeof(why))) < 0)
        snprintf(s->err, s->errsize, "order from %s: %s", url, why);
    else if (location && !r.location[0] && (rc = -EPROTO))
        snprintf(s->err, s->errsize, "%s: the order has no Location", url);
    else if (location)
        memcpy(location, r.location, ACME_MAX_URL);
    hs_buf_free(&r.body);
    return rc;
}

static int authz_fetch(struct session *s, const char *url, struct acme_authz *a)
{
    struct acme_reply r;
    char why[256];
    int rc;

    if ((rc = post(s, url, NULL, &r)) < 0)
        return rc;
    if ((rc = acme__parse_authz(r.body.data, r.body.len, s->fl->challenge, a, why,
                                sizeof(why))) < 0)
        snprintf(s->err, s->errsize, "authorization %s: %s", url, why);
    hs_buf_free(&r.body);
    return rc;
}

static long pause_ms(int retry_after)
{
    if (retry_after <= 0)
        return ACME_POLL_PAUSE_MS;
    return 1000L * (retry_after < ACME_POLL_PAUSE_MAX_S ? retry_after : ACME_POLL_PAUSE_MAX_S);
}

/* Waits for the CA's verdict on a challenge we answered. */
static int authz_wait(struct session *s, const char *url, struct acme_authz *a)
{
    int rc;

    for (int i = 0; i < ACME_POLL_MAX; i++) {
        if ((rc = nap(s, ACME_POLL_PAUSE_MS)) < 0 || (rc = authz_fetch(s, url, a)) < 0)
            return rc;
        if (a->status == ACME_VALID)
            return 0;
        if (a->status != ACME_PENDING) {
            snprintf(s->err, s->errsize, "%s for %s failed: %s", s->fl->challenge,
                     a->identifier, a->error[0] ? a->error : "the authorization is invalid");
            return -EACCES;
        }
    }
    snprintf(s->err, s->errsize, "%s for %s: no verdict after %d polls", s->fl->challenge,
             a->identifier, ACME_POLL_MAX);
    return -ETIMEDOUT;
}

/* One authorization: answer its challenge and wait for the verdict; the answer is withdrawn
 * again whatever happens. */
static int authorize(struct session *s, const char *url)
{
    struct acme_authz a;
    struct acme_reply r;
    char *key_auth;
    int rc;

    if ((rc = authz_fetch(s, url, &a)) < 0 || a.status == ACME_VALID)
        return rc;
    if (a.status != ACME_PENDING || !hs_streq(a.identifier, s->fl->host)) {
        snprintf(s->err, s->errsize, "authorization %s for %s is not pending", url,
                 a.identifier);
        return -EPROTO;
    }
    log_info("acme: answering the %s challenge for %s", s->fl->challenge, a.identifier);
    key_auth = hs_aprintf("%s.%s", a.token, s->thumb);
    s->fl->sink.publish(s->fl->sink.arg, a.token, key_auth);
    if ((rc = post(s, a.chall_url, "{}", &r)) == 0) {
        hs_buf_free(&r.body);
        rc = authz_wait(s, url, &a);
    }
    s->fl->sink.publish(s->fl->sink.arg, NULL, NULL);
    free(key_auth);
    return rc;
}

/* Sends the CSR and waits for the order to become valid. */
static int finalize(struct session *s, const char *order_url, struct acme_order *o,
                    EVP_PKEY *cert_key)
{
    struct hs_buf payload;
    int rc;

    hs_buf_init(&payload, ACME_MAX_BODY);
    if ((rc = hs_buf_puts(&payload, "{\"csr\":\"")) == 0 &&
        (rc = acme__csr(cert_key, s->fl->host, &payload)) == 0)
        rc = hs_buf_puts(&payload, "\"}");
    if (rc == 0)
        rc = order_fetch(s, o->finalize, payload.data, o, NULL);
    else
        snprintf(s->err, s->errsize, "cannot build the CSR");
    hs_buf_free(&payload);
    for (int i = 0; rc == 0 && o->status != ACME_VALID && i < ACME_POLL_MAX; i++) {
        if (o->status != ACME_PROCESSING && o->status != ACME_READY) {
            snprintf(s->err, s->errsize, "order %s became invalid at finalize", order_url);
            return -EPROTO;
        }
        if ((rc = nap(s, pause_ms(0))) == 0)
            rc = order_fetch(s, order_url, NULL, o, NULL);
    }
    if (rc == 0 && o->status != ACME_VALID) {
        snprintf(s->err, s->errsize, "order %s: not issued after %d polls", order_url,
                 ACME_POLL_MAX);
        rc = -ETIMEDOUT;
    }
    return rc;
}

/* The chain, checked to start with a certificate for cert_key. */
static int download(struct session *s, const char *url, EVP_PKEY *cert_key, struct hs_buf *out)
{
    struct acme_reply r;
    int64_t nb, na;
    int rc;

    if ((rc = post(s, url, NULL, &r)) < 0)
        return rc;
    if (acme__cert_times(r.body.data, r.body.len, cert_key, &nb, &na) < 0) {
        snprintf(s->err, s->errsize, "%s: not a certificate chain for our key", url);
        rc = -EPROTO;
    } else {
        rc = hs_buf_append(out, r.body.data, r.body.len);
    }
    hs_buf_free(&r.body);
    return rc;
}

static int run_order(struct session *s, EVP_PKEY *cert_key, struct hs_buf *out)
{
    struct acme_order o;
    char order_url[ACME_MAX_URL];
    json_t *p = json_pack("{s:[{s:s, s:s}]}", "identifiers", "type", "dns", "value",
                          s->fl->host);
    char *payload = hs_json_dump(p, JSON_COMPACT);
    int rc;

    json_decref(p);
    rc = order_fetch(s, s->dir.new_order, payload, &o, order_url);
    free(payload);
    for (size_t i = 0; rc == 0 && i < o.n_authz; i++)
        rc = stopped(s) < 0 ? -ECANCELED : authorize(s, o.authz[i]);
    if (rc == 0 && o.status != ACME_VALID)
        rc = finalize(s, order_url, &o, cert_key);
    if (rc == 0 && (rc = acme__key_pem(cert_key, out)) == 0)
        rc = download(s, o.certificate, cert_key, out);
    return rc;
}

int acme__obtain(const struct acme_flow *fl, struct hs_buf *out, char *err, size_t errsize)
{
    struct session *s = hs_xcalloc(1, sizeof(*s));
    EVP_PKEY *cert_key = NULL;
    int rc;

    *s = (struct session){ .fl = fl, .err = err, .errsize = errsize };
    if ((rc = acme__thumbprint(fl->account, s->thumb)) < 0)
        snprintf(err, errsize, "cannot encode the account key");
    else if ((rc = load_directory(s)) == 0 && (rc = account(s)) == 0) {
        if (!(cert_key = acme__key_new())) {
            snprintf(err, errsize, "cannot make a certificate key");
            rc = -ENOMEM;
        } else {
            rc = run_order(s, cert_key, out);
        }
    }
    EVP_PKEY_free(cert_key);
    free(s);
    return rc;
}
