/* server: wiring for `headscale serve` — store, notify bus, REST API and the HTTP listeners
 * (TCP listen_addr and the unix socket), signals and shutdown. */
#ifndef HS_SERVER_H
#define HS_SERVER_H

#include <jansson.h>

#include "config/config.h"

/* The headscale release whose REST API, CLI and configuration this server answers as. */
#define SERVER_HEADSCALE_API "0.29.3"
#define SERVER_NAME "headscale-c"
/* The version /version and `headscale version` report: headscale's API level as a semver
 * version, ours as its build metadata. Clients that gate features on the server's version
 * (headplane takes anything below 0.28 for an old server, and then drops a node's tags when
 * saving them) see the API they talk to; people see which server it is. */
#define SERVER_VERSION SERVER_HEADSCALE_API "+" SERVER_NAME "." HS_VERSION

/* The version as JSON: headscale's fields (version, commit, buildTime, dirty), "compiler" in
 * place of its "go", and "implementation" {name, version, headscaleApi}. Caller frees. */
json_t *server_version_json(void);
/* The same for people, as `headscale version` prints it. Caller frees. */
char *server_version_text(void);

/* Runs until SIGINT/SIGTERM/SIGQUIT. Returns the process exit status (0 on clean shutdown,
 * 1 when start-up failed; the reason has been logged). */
int server_run(const struct hs_config *cfg);

/* `headscale configtest`: builds everything `serve` would (opens the database, applies
 * migrations, reads the Noise key and the policy) without listening. Prints problems to
 * stderr; returns 0 or 1. */
int server_configtest(const struct hs_config *cfg);

#endif
