/* cli: the `headscale` command line. Parses argv (headscale 0.22.3's command tree, plus the
 * current one where they don't clash), loads the config and either runs the server
 * (`serve`, `configtest`) or talks REST to it over the unix socket, or to a remote server with
 * HEADSCALE_CLI_ADDRESS + HEADSCALE_CLI_API_KEY. */
#ifndef HS_CLI_H
#define HS_CLI_H

/* Returns the process exit status. */
int cli_main(int argc, char **argv);

#endif
