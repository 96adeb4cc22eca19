/* Shared between the server/ source files only. */
#ifndef HS_SERVER_INTERNAL_H
#define HS_SERVER_INTERNAL_H

#include <microhttpd.h>

#include "control/control.h"
#include "derp/derp.h"
#include "net/net.h"
#include "util/util.h"

/* Returns a listening socket, or a negative errno (logged). */
int listen_tcp(const char *addr);
int listen_unix(const char *path, unsigned mode);

/* The front door of the TCP listener (front.c): it accepts, terminates TLS, and sends
 * /ts2021 and /derp upgrades to their loops and every other request to mhd. */
struct front_deps {
    int listen_fd;            /* owned by the front door from front_start() on */
    struct net_tls *tls;      /* NULL for plain HTTP */
    struct control *control;
    struct derp_server *derp; /* NULL when the embedded DERP server is off */
    struct MHD_Daemon *mhd;   /* started without a listening socket */
};
struct front;
int front_start(const struct front_deps *deps, struct front **out);
/* Stops accepting and closes what it has not handed on; before the loops and mhd stop. */
void front_stop(struct front *f);

#endif
