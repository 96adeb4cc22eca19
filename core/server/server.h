/* server: wiring for `headscale serve` — store, notify bus, REST API and the HTTP listeners
 * (TCP listen_addr and the unix socket), signals and shutdown. */
#ifndef HS_SERVER_H
#define HS_SERVER_H

#include "config/config.h"

/* Runs until SIGINT/SIGTERM/SIGQUIT. Returns the process exit status (0 on clean shutdown,
 * 1 when start-up failed; the reason has been logged). */
int server_run(const struct hs_config *cfg);

/* `headscale configtest`: builds everything `serve` would (opens the database, applies
 * migrations, reads the Noise key and the policy) without listening. Prints problems to
 * stderr; returns 0 or 1. */
int server_configtest(const struct hs_config *cfg);

#endif
