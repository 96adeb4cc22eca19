/* Shared between the net/ source files only. */
#ifndef HS_NET_INTERNAL_H
#define HS_NET_INTERNAL_H

#include <openssl/ssl.h>

#include "net/net.h"

/* A server-side SSL for a new connection on t; NULL when OpenSSL fails. */
SSL *net__tls_ssl(struct net_tls *t);

#endif
