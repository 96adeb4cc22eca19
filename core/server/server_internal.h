/* Shared between the server/ source files only. */
#ifndef HS_SERVER_INTERNAL_H
#define HS_SERVER_INTERNAL_H

#include "util/util.h"

/* Returns a listening socket, or a negative errno (logged). */
int listen_tcp(const char *addr);
int listen_unix(const char *path, unsigned mode);

#endif
