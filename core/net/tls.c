/* The TLS context of the listener. Its certificate is not fixed at build time: it can be
 * replaced while connections are served (a renewed ACME certificate, a reload), and an ACME
 * TLS-ALPN-01 challenge (RFC 8737) can be answered beside it. So every handshake picks its
 * certificate when the ClientHello arrives, from what the context holds at that moment;
 * established connections keep theirs. */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"
#include "net/net_internal.h"

#define ACME_TLS_ALPN "acme-tls/1"

/* A certificate with its key and the chain sent after it. */
struct tls_cert {
    X509 *leaf;
    EVP_PKEY *key;
    STACK_OF(X509) *chain;
};

struct net_tls {
    SSL_CTX *ctx;
    pthread_mutex_t mu; /* guards the two below; held only to take references */
    struct tls_cert *cert;      /* NULL until one is loaded */
    struct tls_cert *challenge; /* the RFC 8737 certificate while a challenge is pending */
};

static void tls_cert_free(struct tls_cert *c)
{
    if (c) {
        X509_free(c->leaf);
        EVP_PKEY_free(c->key);
        sk_X509_pop_free(c->chain, X509_free);
        free(c);
    }
}

/* Reads a leaf, its chain and a private key, in any order, from PEM bytes; the key must
 * belong to the leaf. NULL with a reason in err. */
static struct tls_cert *tls_cert_parse(const char *pem, size_t len, char *err, size_t errsize)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    struct tls_cert *c = hs_xcalloc(1, sizeof(*c));
    STACK_OF(X509_INFO) *infos = bio ? PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL) : NULL;
    int i;

    c->chain = sk_X509_new_null();
    for (i = 0; infos && c->chain && i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *xi = sk_X509_INFO_value(infos, i);
        if (xi->x509 && !c->leaf)
            c->leaf = X509_dup(xi->x509);
        else if (xi->x509)
            sk_X509_push(c->chain, X509_dup(xi->x509));
        if (xi->x_pkey && xi->x_pkey->dec_pkey && !c->key && EVP_PKEY_up_ref(xi->x_pkey->dec_pkey))
            c->key = xi->x_pkey->dec_pkey;
    }
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    BIO_free(bio);
    ERR_clear_error();
    if (!c->leaf || !c->key || !c->chain)
        snprintf(err, errsize, "%s", !c->leaf ? "no certificate" : "no private key");
    else if (X509_check_private_key(c->leaf, c->key) != 1)
        snprintf(err, errsize, "the private key does not belong to the certificate");
    else
        return c;
    ERR_clear_error();
    tls_cert_free(c);
    return NULL;
}

/* Whether the ALPN extension of a ClientHello (RFC 7301 §3.1: a 2-byte length, then
 * protocol names, each with a 1-byte length) offers proto: 1 yes, 0 no, -EINVAL malformed. */
int net_alpn_offers(const uint8_t *ext, size_t len, const char *proto)
{
    size_t plen = strlen(proto), list, i;
    bool found = false;

    if (len < 2 || (list = (size_t)ext[0] << 8 | ext[1]) != len - 2 || list == 0)
        return -EINVAL;
    for (i = 2; i < len; i += 1 + ext[i]) {
        if (ext[i] == 0 || ext[i] > len - i - 1)
            return -EINVAL;
        if (ext[i] == plen && memcmp(ext + i + 1, proto, plen) == 0)
            found = true;
    }
    return found;
}

static bool offers_acme_alpn(SSL *ssl)
{
    const unsigned char *ext;
    size_t len;

    return SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation,
                                     &ext, &len) == 1 &&
           net_alpn_offers(ext, len, ACME_TLS_ALPN) == 1;
}

/* Puts the certificate for this handshake on the connection: the challenge one to a client
 * offering acme-tls/1 while a challenge is pending (the ACME server's validation), the
 * current one otherwise. Without a certificate the handshake fails. */
static int on_client_hello(SSL *ssl, int *alert, void *arg)
{
    struct net_tls *t = arg;
    struct tls_cert *c;
    bool acme;
    int ok;

    pthread_mutex_lock(&t->mu);
    acme = t->challenge && offers_acme_alpn(ssl);
    c = acme ? t->challenge : t->cert;
    ok = c && SSL_use_cert_and_key(ssl, c->leaf, c->key, c->chain, 1) == 1;
    pthread_mutex_unlock(&t->mu);
    if (!ok) {
        ERR_clear_error();
        *alert = SSL_AD_HANDSHAKE_FAILURE;
        return SSL_CLIENT_HELLO_ERROR;
    }
    SSL_set_app_data(ssl, acme ? t : NULL); /* tells select_alpn which kind it is */
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* Everything we serve over TLS is HTTP/1.1 (upgrades, and the REST API through
 * libmicrohttpd): never agree to h2. A challenge handshake agrees to acme-tls/1 only (RFC
 * 8737 §4: the validation server closes it right after). */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    static const unsigned char h11[] = "\x08http/1.1";
    static const unsigned char acme[] = "\x0a" ACME_TLS_ALPN;
    bool challenge = SSL_get_app_data(ssl) != NULL;
    unsigned char *sel;

    (void)arg;
    if (SSL_select_next_proto(&sel, outlen, challenge ? acme : h11,
                              (challenge ? sizeof(acme) : sizeof(h11)) - 1, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return challenge ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

struct net_tls *net_tls_new_empty(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    struct net_tls *t;

    if (!ctx) {
        ERR_clear_error();
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Partial writes and a moving buffer fit our send buffers; idle connections give their
     * 34 KiB of record buffers back (thousands of idle map streams). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_num_tickets(ctx, 0); /* no resumption state to keep per process */
    /* Read what the socket has, not a record header and then its body: a DERP sender
     * writes one small record per packet. */
    SSL_CTX_set_read_ahead(ctx, 1);
    t = hs_xcalloc(1, sizeof(*t));
    t->ctx = ctx;
    pthread_mutex_init(&t->mu, NULL);
    SSL_CTX_set_client_hello_cb(ctx, on_client_hello, t);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, t);
    return t;
}

struct net_tls *net_tls_new(const char *cert_path, const char *key_path, char *err,
                            size_t errsize)
{
    struct net_tls *t = net_tls_new_empty();

    if (!t) {
        snprintf(err, errsize, "cannot make a TLS context");
        return NULL;
    }
    if (net_tls_reload(t, cert_path, key_path, err, errsize) < 0) {
        net_tls_free(t);
        return NULL;
    }
    return t;
}

/* The PEM text of the certificate file, then of the key file when it is another file. */
static int read_pems(const char *cert_path, const char *key_path, struct hs_buf *pem,
                     char *err, size_t errsize)
{
    const char *paths[2] = { cert_path, key_path }, *what[2] = { "certificate", "key" };
    char *data;
    size_t len;
    int rc;

    for (int i = 0; i < 2; i++) {
        if (i == 1 && strcmp(key_path, cert_path) == 0)
            break;
        if ((rc = hs_read_file(paths[i], NET_TLS_MAX_PEM, &data, &len)) < 0) {
            snprintf(err, errsize, "%s %s: %s", what[i], paths[i], hs_strerror(rc));
            return rc;
        }
        rc = hs_buf_append(pem, data, len) < 0 || hs_buf_puts(pem, "\n") < 0 ? -E2BIG : 0;
        free(data);
        if (rc < 0) {
            snprintf(err, errsize, "%s %s: more than %u bytes of PEM", what[i], paths[i],
                     NET_TLS_MAX_PEM);
            return rc;
        }
    }
    return 0;
}

int net_tls_reload(struct net_tls *t, const char *cert_path, const char *key_path, char *err,
                 size_t errsize)
{
    struct hs_buf pem;
    struct tls_cert *c = NULL, *old;
    char why[160];
    int rc;

    hs_buf_init(&pem, 2 * NET_TLS_MAX_PEM + 2);
    if ((rc = read_pems(cert_path, key_path, &pem, err, errsize)) == 0 &&
        !(c = tls_cert_parse(pem.data, pem.len, why, sizeof(why)))) {
        snprintf(err, errsize, "%s: %s", cert_path, why);
        rc = -EINVAL;
    }
    sodium_memzero(pem.data, pem.len); /* the private key */
    hs_buf_free(&pem);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&t->mu);
    old = t->cert;
    t->cert = c;
    pthread_mutex_unlock(&t->mu);
    tls_cert_free(old);
    return 0;
}

int net_tls_set_challenge(struct net_tls *t, const char *pem, size_t len)
{
    struct tls_cert *c = NULL, *old;
    char why[160];

    if (pem && !(c = tls_cert_parse(pem, len, why, sizeof(why)))) {
        log_warnx("net: the TLS-ALPN-01 certificate is unusable: %s", why);
        return -EINVAL;
    }
    pthread_mutex_lock(&t->mu);
    old = t->challenge;
    t->challenge = c;
    pthread_mutex_unlock(&t->mu);
    tls_cert_free(old);
    return 0;
}

void net_tls_describe(struct net_tls *t, char *out, size_t outsize)
{
    X509 *cert = NULL;
    BIGNUM *bn = NULL;
    char *serial = NULL, until[64] = "?";
    BIO *bio;

    pthread_mutex_lock(&t->mu);
    if (t->cert && X509_up_ref(t->cert->leaf))
        cert = t->cert->leaf;
    pthread_mutex_unlock(&t->mu);
    if (!cert) {
        snprintf(out, outsize, "no certificate");
        return;
    }
    if ((bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL)))
        serial = BN_bn2hex(bn);
    if ((bio = BIO_new(BIO_s_mem()))) {
        if (ASN1_TIME_print(bio, X509_get0_notAfter(cert)) == 1) {
            int n = BIO_read(bio, until, (int)sizeof(until) - 1);
            until[n > 0 ? n : 0] = '\0';
        }
        BIO_free(bio);
    }
    snprintf(out, outsize, "serial %s, valid until %s", serial ? serial : "?", until);
    OPENSSL_free(serial);
    BN_free(bn);
    X509_free(cert);
    ERR_clear_error();
}

void net_tls_free(struct net_tls *t)
{
    if (t) {
        SSL_CTX_free(t->ctx);
        tls_cert_free(t->cert);
        tls_cert_free(t->challenge);
        pthread_mutex_destroy(&t->mu);
        free(t);
    }
}

SSL *net__tls_ssl(struct net_tls *t)
{
    return SSL_new(t->ctx);
}
