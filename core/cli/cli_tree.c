/* The `headscale` command tree: headscale 0.22.3's commands, aliases and flags, plus the
 * current tree's where they don't clash. Adding a subcommand = one entry here + a handler. */
#include "cli/cli_internal.h"

#define ALIASES(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define FLAGS(...) ((const struct cli_flag[]){ __VA_ARGS__, { 0 } })
#define SUBS(...) ((const struct cli_cmd *const[]){ __VA_ARGS__, NULL })

#define OUTPUT_HELP                                                                          \
    "Print results as json, json-line (one line) or yaml instead of tables and messages"
#define EXPIRATION_HELP                                                                      \
    "How long the key stays valid: a number and a unit (s, m, h, d, w, y), e.g. 30m or 90d"

/* Hidden: 0.22's name for --user, still accepted. */
#define NAMESPACE_FLAG { "namespace", 'n', CLI_STRING, NULL, "Old name of --user", true }
#define USER_ID_FLAG { "identifier", 'i', CLI_STRING, NULL, "The user's numeric ID", false }
#define USER_NAME_FLAG { "name", 'n', CLI_STRING, NULL, "The user's name", false }
#define KEY_ID_FLAG { "id", 'i', CLI_STRING, NULL, "The key's numeric ID", false }
#define REGISTER_USER_FLAG                                                                   \
    { "user", 'u', CLI_STRING, NULL, "The user the node will belong to", false }

/* ---- serve, configtest, version, health, generate ---- */

static const struct cli_cmd cmd_serve = {
    .name = "serve", .use = "serve", .summary = "Run the control server in the foreground",
    .run = cli_cmd_serve, .max_args = 0,
};

static const struct cli_cmd cmd_configtest = {
    .name = "configtest", .use = "configtest",
    .summary = "Check that the server could start with this configuration",
    .long_help = "Loads the configuration, the noise private key (creating it if missing),\n"
                 "the database (applying migrations), the policy and the DERP map, as\n"
                 "\"serve\" would, then exits: status 0 if all of them loaded, 1 with the reason\n"
                 "otherwise.",
    .run = cli_cmd_configtest, .max_args = 0,
};

static const struct cli_cmd cmd_version = {
    .name = "version", .use = "version",
    .summary = "Show the version, commit, build time and compiler of this binary",
    .run = cli_cmd_version, .max_args = 0,
};

static const struct cli_cmd cmd_health = {
    .name = "health", .use = "health",
    .summary = "Ask the running server whether it and its database are up",
    .long_help = "Asks the running server (GET /api/v1/health) whether it can reach its\n"
                 "database. Exit status 0 when it can, 1 when it cannot or does not answer.",
    .run = cli_cmd_health, .max_args = 0,
};

static const struct cli_cmd cmd_mockoidc = {
    .name = "mockoidc", .use = "mockoidc",
    .summary = "Run a stand-in OpenID provider for tests and demos",
    .long_help = "Serves an OpenID Connect provider that signs in every authorization request\n"
                 "as the next user of MOCKOIDC_USERS (a JSON list with Subject, Email,\n"
                 "EmailVerified, PreferredUsername and Groups) without asking anything. It\n"
                 "listens on MOCKOIDC_ADDR:MOCKOIDC_PORT with the issuer\n"
                 "http://MOCKOIDC_ADDR:MOCKOIDC_PORT/oidc, knows one client\n"
                 "(MOCKOIDC_CLIENT_ID, MOCKOIDC_CLIENT_SECRET), and its tokens last\n"
                 "MOCKOIDC_ACCESS_TTL (default 2m). Never use it for real logins.",
    .run = cli_cmd_mockoidc, .max_args = 0,
};

static const struct cli_cmd cmd_help = {
    .name = "help", .use = "help [COMMAND...]",
    .summary = "Show the help of a command, like COMMAND --help",
    .run = cli_cmd_help, .max_args = CLI_MAX_POSITIONAL,
};

#define COMPLETION_SHELL(sym, shell, where)                                                  \
    static const struct cli_cmd sym = {                                                      \
        .name = shell, .use = shell,                                                         \
        .summary = "Print the " shell " completion script for headscale",                    \
        .long_help = "Prints a " shell " script that completes headscale's commands and "     \
                     "flags\n(" where ").",                                                  \
        .flags = FLAGS({ "no-descriptions", 0, CLI_BOOL, "false",                            \
                         "Accepted for compatibility: completions carry no descriptions",     \
                         false }),                                                           \
        .run = cli_cmd_completion, .max_args = 0,                                            \
    }
COMPLETION_SHELL(cmd_completion_bash, "bash", "source it, or install it as "
                                              "/etc/bash_completion.d/headscale");
COMPLETION_SHELL(cmd_completion_zsh, "zsh", "install it as _headscale in a directory of $fpath");
COMPLETION_SHELL(cmd_completion_fish, "fish",
                 "install it as ~/.config/fish/completions/headscale.fish");
COMPLETION_SHELL(cmd_completion_powershell, "powershell", "add it to your PowerShell profile");

static const struct cli_cmd cmd_completion = {
    .name = "completion", .use = "completion",
    .summary = "Print a shell script that completes headscale's commands and flags",
    .subs = SUBS(&cmd_completion_bash, &cmd_completion_fish, &cmd_completion_powershell,
                 &cmd_completion_zsh),
};

static const struct cli_cmd cmd_gen_private_key = {
    .name = "private-key", .use = "private-key",
    .summary = "Print a new random private key (privkey:<64 hex digits>)",
    .run = cli_cmd_generate_private_key, .max_args = 0,
};

static const struct cli_cmd cmd_generate = {
    .name = "generate", .aliases = ALIASES("gen"), .use = "generate",
    .summary = "Make keys", .subs = SUBS(&cmd_gen_private_key),
};

/* ---- users ---- */

static const struct cli_cmd cmd_users_create = {
    .name = "create", .aliases = ALIASES("c", "new"), .use = "create NAME",
    .summary = "Add a user with the given name",
    .flags = FLAGS({ "display-name", 'd', CLI_STRING, NULL,
                     "Name shown for the user in clients", false },
                   { "email", 'e', CLI_STRING, NULL, "The user's email address", false },
                   { "picture-url", 'p', CLI_STRING, NULL,
                     "Address of the user's avatar image", false }),
    .run = cli_cmd_users_create, .min_args = 1, .max_args = 1,
};

static const struct cli_cmd cmd_users_list = {
    .name = "list", .aliases = ALIASES("ls", "show"), .use = "list",
    .summary = "Show users, all or those matching a filter",
    .long_help = "Shows every user, or those matching one filter: --identifier when given,\n"
                 "else --name, else --email.",
    .flags = FLAGS({ "identifier", 'i', CLI_STRING, NULL,
                     "Only the user with this numeric ID", false },
                   { "name", 'n', CLI_STRING, NULL, "Only the user with this name", false },
                   { "email", 'e', CLI_STRING, NULL,
                     "Only the user with this email address", false }),
    .run = cli_cmd_users_list, .max_args = 0,
};

static const struct cli_cmd cmd_users_destroy = {
    .name = "destroy", .aliases = ALIASES("delete"),
    .use = "destroy NAME | --identifier ID | --name NAME",
    .summary = "Remove a user and its pre-auth keys",
    .long_help = "Removes a user and its pre-auth keys, after a confirmation prompt unless\n"
                 "--force is given. NAME may also be a numeric user ID. A user who still owns\n"
                 "nodes is kept: delete or move the nodes first.",
    .flags = FLAGS(USER_ID_FLAG, USER_NAME_FLAG),
    .run = cli_cmd_users_destroy, .max_args = 1,
};

static const struct cli_cmd cmd_users_rename = {
    .name = "rename", .aliases = ALIASES("mv"),
    .use = "rename OLD_NAME NEW_NAME | (--identifier ID | --name NAME) --new-name NEW_NAME",
    .summary = "Change a user's name",
    .flags = FLAGS(USER_ID_FLAG, USER_NAME_FLAG,
                   { "new-name", 'r', CLI_STRING, NULL, "The name the user gets", false }),
    .run = cli_cmd_users_rename, .max_args = 2,
};

static const struct cli_cmd cmd_users = {
    .name = "users", .aliases = ALIASES("user", "namespace", "namespaces", "ns"),
    .use = "users", .summary = "Create, list, rename and remove users",
    .subs = SUBS(&cmd_users_create, &cmd_users_list, &cmd_users_destroy, &cmd_users_rename),
};

/* ---- preauthkeys ---- */

static const struct cli_cmd cmd_pak_list = {
    .name = "list", .aliases = ALIASES("ls", "show"), .use = "list",
    .summary = "Show pre-auth keys: all, or those of --user",
    .run = cli_cmd_preauthkeys_list, .max_args = 0,
};

static const struct cli_cmd cmd_pak_create = {
    .name = "create", .aliases = ALIASES("c", "new"), .use = "create",
    .summary = "Make a pre-auth key for --user, or a tagged one with --tags",
    .flags = FLAGS({ "reusable", 0, CLI_BOOL, "false",
                     "Let the key register any number of nodes, not just one", false },
                   { "ephemeral", 0, CLI_BOOL, "false",
                     "Nodes registered with the key are removed once offline longer than "
                     "node.ephemeral.inactivity_timeout", false },
                   { "expiration", 'e', CLI_STRING, "1h", EXPIRATION_HELP, false },
                   { "tags", 0, CLI_LIST, NULL,
                     "Tags given to the nodes registered with the key (comma separated)", false }),
    .run = cli_cmd_preauthkeys_create, .max_args = 0,
};

static const struct cli_cmd cmd_pak_expire = {
    .name = "expire", .aliases = ALIASES("revoke", "exp", "e"), .use = "expire KEY | --id ID",
    .summary = "Make a pre-auth key unusable from now on",
    .long_help = "Makes the key of --id, or KEY, unusable from now on; nodes it registered stay.\n"
                 "KEY is the full key, or its prefix as shown by \"preauthkeys list\".",
    .flags = FLAGS(KEY_ID_FLAG),
    .run = cli_cmd_preauthkeys_expire, .max_args = 1,
};

static const struct cli_cmd cmd_pak_delete = {
    .name = "delete", .aliases = ALIASES("del", "rm", "d"), .use = "delete KEY | --id ID",
    .summary = "Remove a pre-auth key; nodes registered with it stay",
    .flags = FLAGS(KEY_ID_FLAG),
    .run = cli_cmd_preauthkeys_delete, .max_args = 1,
};

static const struct cli_cmd cmd_preauthkeys = {
    .name = "preauthkeys", .aliases = ALIASES("preauthkey", "authkey", "pre"),
    .use = "preauthkeys", .summary = "Create, list, expire and remove pre-auth keys",
    .pflags = FLAGS({ "user", 'u', CLI_STRING, NULL,
                      "The user owning the keys (name or numeric ID)", false },
                    NAMESPACE_FLAG),
    .subs = SUBS(&cmd_pak_list, &cmd_pak_create, &cmd_pak_expire, &cmd_pak_delete),
};

/* ---- apikeys ---- */

static const struct cli_cmd cmd_api_list = {
    .name = "list", .aliases = ALIASES("ls", "show"), .use = "list",
    .summary = "Show API keys by prefix, with their expiry",
    .run = cli_cmd_apikeys_list, .max_args = 0,
};

static const struct cli_cmd cmd_api_create = {
    .name = "create", .aliases = ALIASES("c", "new"), .use = "create",
    .summary = "Make an API key and print it",
    .long_help = "Makes an API key and shows it once: the server keeps only a hash of it, so\n"
                 "store it now. A lost key cannot be recovered: expire it and make another.",
    .flags = FLAGS({ "expiration", 'e', CLI_STRING, "90d", EXPIRATION_HELP, false }),
    .run = cli_cmd_apikeys_create, .max_args = 0,
};

#define APIKEY_SELECT_FLAGS                                                                  \
    FLAGS({ "prefix", 'p', CLI_STRING, NULL, "The key's prefix, as \"apikeys list\" shows it",  \
            false },                                                                        \
          KEY_ID_FLAG)

static const struct cli_cmd cmd_api_expire = {
    .name = "expire", .aliases = ALIASES("revoke", "exp", "e"),
    .use = "expire --prefix PREFIX | --id ID", .summary = "Make an API key unusable from now on",
    .flags = APIKEY_SELECT_FLAGS, .run = cli_cmd_apikeys_expire, .max_args = 0,
};

static const struct cli_cmd cmd_api_delete = {
    .name = "delete", .aliases = ALIASES("remove", "del"),
    .use = "delete --prefix PREFIX | --id ID", .summary = "Remove an API key",
    .flags = APIKEY_SELECT_FLAGS, .run = cli_cmd_apikeys_delete, .max_args = 0,
};

static const struct cli_cmd cmd_apikeys = {
    .name = "apikeys", .aliases = ALIASES("apikey", "api"), .use = "apikeys",
    .summary = "Create, list and expire API keys",
    .subs = SUBS(&cmd_api_list, &cmd_api_create, &cmd_api_expire, &cmd_api_delete),
};

/* ---- nodes, auth ---- */

#define NODE_ID_HELP "The node's numeric ID"
#define NODE_ID_FLAG { "identifier", 'i', CLI_STRING, NULL, NODE_ID_HELP, false }

static const struct cli_cmd cmd_nodes_list = {
    .name = "list", .aliases = ALIASES("ls", "show"), .use = "list",
    .summary = "Show nodes with their addresses, owner and state",
    .long_help = "Shows all nodes, or those of --user (name or ID). --tags adds 0.22's\n"
                 "ForcedTags, InvalidTags and ValidTags columns.",
    .flags = FLAGS({ "user", 'u', CLI_STRING, NULL,
                     "Only the nodes of this user (name or numeric ID)", false },
                   NAMESPACE_FLAG,
                   { "tags", 't', CLI_BOOL, "false",
                     "Add the forced, invalid and valid tag columns", false }),
    .run = cli_cmd_nodes_list, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_list_routes = {
    .name = "list-routes", .aliases = ALIASES("lsr", "routes"), .use = "list-routes",
    .summary = "Show each node's announced, approved and served routes",
    .long_help = "List the nodes that announce, have approved or serve routes (all nodes, or\n"
                 "the one of --identifier), one prefix per line.",
    .flags = FLAGS(NODE_ID_FLAG),
    .run = cli_cmd_nodes_list_routes, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_register = {
    .name = "register", .use = "register",
    .summary = "Finish a node's login for a user (older name of auth register)",
    .long_help = "Completes an interactive login: KEY is the ID at the end of the URL the\n"
                 "client shows (<server_url>/register/<ID>). Same as \"auth register\".",
    .flags = FLAGS(REGISTER_USER_FLAG,
                   NAMESPACE_FLAG,
                   { "key", 'k', CLI_STRING, NULL, "The ID from the client's login URL", false }),
    .run = cli_cmd_nodes_register, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_delete = {
    .name = "delete", .aliases = ALIASES("del"), .use = "delete",
    .summary = "Remove a node from the tailnet",
    .long_help = "Removes a node, after a confirmation prompt unless --force is given. Its peers\n"
                 "lose it at once; the client has to log in again to come back.",
    .flags = FLAGS(NODE_ID_FLAG),
    .run = cli_cmd_nodes_delete, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_expire = {
    .name = "expire", .aliases = ALIASES("logout", "exp", "e"), .use = "expire",
    .summary = "Log a node out now, at a set time, or never",
    .long_help = "Sets when the node's key expires. Without flags it expires now: the node stays\n"
                 "listed but must log in again before it can talk to its peers. --expiry sets a\n"
                 "time instead, --disable removes the expiry.",
    .flags = FLAGS(NODE_ID_FLAG,
                   { "expiry", 'e', CLI_STRING, NULL,
                     "When the key expires, in RFC 3339 (2025-08-27T10:00:00Z); default now",
                     false },
                   { "disable", 'd', CLI_BOOL, "false",
                     "Remove the expiry: the key stays valid", false }),
    .run = cli_cmd_nodes_expire, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_rename = {
    .name = "rename", .use = "rename NEW_NAME",
    .summary = "Change the name a node has in the tailnet",
    .long_help = "Sets the node's given name: a DNS label (lowercase letters, digits, '-'),\n"
                 "unique in the tailnet.",
    .flags = FLAGS(NODE_ID_FLAG),
    .run = cli_cmd_nodes_rename, .min_args = 1, .max_args = 1,
};

static const struct cli_cmd cmd_nodes_move = {
    .name = "move", .aliases = ALIASES("mv"), .use = "move",
    .summary = "Hand a node over to a different user",
    .flags = FLAGS(NODE_ID_FLAG, { "user", 'u', CLI_STRING, NULL,
                                   "The user who gets the node (name or numeric ID)", false },
                   NAMESPACE_FLAG),
    .run = cli_cmd_nodes_move, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_tag = {
    .name = "tag", .aliases = ALIASES("tags", "t"), .use = "tag",
    .summary = "Set a node's tags, replacing the ones it has",
    .long_help = "Replaces the tags of a node with --tags (comma separated or repeated,\n"
                 "e.g. -t tag:a,tag:b).",
    .flags = FLAGS(NODE_ID_FLAG,
                   { "tags", 't', CLI_LIST, NULL, "The node's new tags, e.g. tag:a,tag:b", false }),
    .run = cli_cmd_nodes_tag, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_approve_routes = {
    .name = "approve-routes", .use = "approve-routes",
    .summary = "Replace the routes a node may serve",
    .long_help = "Sets the routes the node may serve to exactly --routes; approvals not listed\n"
                 "are dropped. Approving 0.0.0.0/0 or ::/0 approves both exit routes.",
    .flags = FLAGS(NODE_ID_FLAG,
                   { "routes", 'r', CLI_LIST, NULL,
                     "Prefixes the node may serve, e.g. 10.0.0.0/8,192.168.0.0/24; \"\" approves "
                     "none", false }),
    .run = cli_cmd_nodes_approve_routes, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_backfill_ips = {
    .name = "backfillips", .use = "backfillips",
    .summary = "Give nodes the addresses the configured prefixes call for",
    .long_help = "After prefixes.v4 or prefixes.v6 changed: every node lacking an address of a\n"
                 "configured family gets one, and addresses of a family no longer configured\n"
                 "are taken away. Clients learn their new addresses with their next map. Asks\n"
                 "first unless --force; prints each change.",
    .run = cli_cmd_nodes_backfill_ips, .max_args = 0,
};

static const struct cli_cmd cmd_nodes = {
    .name = "nodes", .aliases = ALIASES("node", "machine", "machines"), .use = "nodes",
    .summary = "List, register, tag and remove nodes",
    .subs = SUBS(&cmd_nodes_approve_routes, &cmd_nodes_backfill_ips, &cmd_nodes_delete,
                 &cmd_nodes_expire,
                 &cmd_nodes_list, &cmd_nodes_list_routes, &cmd_nodes_move, &cmd_nodes_register,
                 &cmd_nodes_rename, &cmd_nodes_tag),
};

static const struct cli_cmd cmd_auth_register = {
    .name = "register", .use = "register",
    .summary = "Finish a node's login for a user",
    .long_help = "Completes a pending interactive login: --auth-id is the ID at the end of the\n"
                 "URL the client shows (<server_url>/register/<ID>).",
    .flags = FLAGS(REGISTER_USER_FLAG,
                   { "auth-id", 0, CLI_STRING, NULL, "The ID from the client's login URL", false }),
    .run = cli_cmd_auth_register, .max_args = 0,
};

#define AUTH_ID_FLAG { "auth-id", 0, CLI_STRING, NULL, "ID of the pending login", false }

static const struct cli_cmd cmd_auth_approve = {
    .name = "approve", .use = "approve --auth-id ID",
    .summary = "Let a pending login through for the owner its machine already has",
    .long_help = "Completes a pending interactive login from a machine that has a node already\n"
                 "(it logged out, or its key expired): the node keeps its user or its tags.\n"
                 "A machine new to the server needs \"auth register\", which names the user.\n"
                 "--auth-id is the ID at the end of the URL the client shows\n"
                 "(<server_url>/register/<ID>).",
    .flags = FLAGS(AUTH_ID_FLAG), .run = cli_cmd_auth_approve, .max_args = 0,
};

static const struct cli_cmd cmd_auth_reject = {
    .name = "reject", .use = "reject --auth-id ID",
    .summary = "Refuse a pending login",
    .long_help = "Refuses a pending interactive login: the waiting client is told so (tailscale\n"
                 "up stops with the message) and the login can no longer be completed.",
    .flags = FLAGS(AUTH_ID_FLAG), .run = cli_cmd_auth_reject, .max_args = 0,
};

static const struct cli_cmd cmd_auth = {
    .name = "auth", .use = "auth", .summary = "Act on logins waiting for an operator",
    .subs = SUBS(&cmd_auth_approve, &cmd_auth_register, &cmd_auth_reject),
};

/* ---- routes (headscale 0.22.3) ---- */

#define ROUTE_ID_HELP "The route's numeric ID, as \"routes list\" shows it"
#define ROUTE_ID_FLAG { "route", 'r', CLI_STRING, NULL, ROUTE_ID_HELP, false }

static const struct cli_cmd cmd_routes_list = {
    .name = "list", .aliases = ALIASES("ls", "show"), .use = "list",
    .summary = "Show routes by ID with their node and state",
    .long_help = "Lists every announced or approved route with its route ID (all nodes, or the\n"
                 "one of --identifier). Enabled means approved; Primary says which node serves\n"
                 "a subnet route (\"-\" for exit routes).",
    .flags = FLAGS(NODE_ID_FLAG),
    .run = cli_cmd_routes_list, .max_args = 0,
};

static const struct cli_cmd cmd_routes_enable = {
    .name = "enable", .use = "enable --route ID",
    .summary = "Approve a route",
    .long_help = "Approves the route of --route, which its node must announce. Enabling an\n"
                 "exit route (0.0.0.0/0 or ::/0) enables both.",
    .flags = FLAGS(ROUTE_ID_FLAG), .run = cli_cmd_routes_enable, .max_args = 0,
};

static const struct cli_cmd cmd_routes_disable = {
    .name = "disable", .use = "disable --route ID",
    .summary = "Withdraw a route's approval",
    .long_help = "Withdraws the approval of the route of --route (exit routes: both).",
    .flags = FLAGS(ROUTE_ID_FLAG), .run = cli_cmd_routes_disable, .max_args = 0,
};

static const struct cli_cmd cmd_routes_delete = {
    .name = "delete", .use = "delete --route ID",
    .summary = "Withdraw a route's approval and forget its ID",
    .long_help = "Withdraws the approval of the route of --route (exit routes: both) and forgets\n"
                 "its ID; a route the node still announces is listed again under a new ID.",
    .flags = FLAGS(ROUTE_ID_FLAG), .run = cli_cmd_routes_delete, .max_args = 0,
};

static const struct cli_cmd cmd_routes = {
    .name = "routes", .aliases = ALIASES("r", "route"), .use = "routes",
    .summary = "Approve and withdraw routes by route ID",
    .long_help = "headscale 0.22's route commands, by route ID. \"nodes list-routes\" and\n"
                 "\"nodes approve-routes\" change the same approvals.",
    .subs = SUBS(&cmd_routes_delete, &cmd_routes_disable, &cmd_routes_enable, &cmd_routes_list),
};

/* ---- policy ---- */

#define BYPASS_FLAG                                                                          \
    { "bypass-grpc-and-access-database-directly", 0, CLI_BOOL, "false",                      \
      "Use the database of the configuration directly instead of the server; only while "    \
      "no server runs on it (asks first unless --force)", false }

static const struct cli_cmd cmd_policy_get = {
    .name = "get", .aliases = ALIASES("show", "view", "fetch"), .use = "get",
    .summary = "Print the policy in force, as stored",
    .long_help = "Prints the policy text the server holds. With\n"
                 "--bypass-grpc-and-access-database-directly no server is asked: the stored\n"
                 "policy (policy.mode \"database\") or the policy file is read instead.",
    .flags = FLAGS(BYPASS_FLAG), .run = cli_cmd_policy_get, .max_args = 0,
};

static const struct cli_cmd cmd_policy_set = {
    .name = "set", .aliases = ALIASES("put", "update"), .use = "set --file PATH",
    .summary = "Replace the policy in force",
    .long_help = "Sends a policy document (HuJSON, or YAML) to the server, which stores it and\n"
                 "puts it in force at once if it loads, compiles for the tailnet and passes its\n"
                 "tests; otherwise it is refused with the reason and nothing changes. Needs\n"
                 "policy.mode \"database\". With --bypass-grpc-and-access-database-directly\n"
                 "the same checks run here against the stored users and nodes and the policy\n"
                 "is written to the database; a server started later puts it in force.",
    .flags = FLAGS({ "file", 'f', CLI_STRING, NULL,
                     "Policy document to send (HuJSON or YAML)", false }, BYPASS_FLAG),
    .run = cli_cmd_policy_set, .max_args = 0,
};

static const struct cli_cmd cmd_policy_check = {
    .name = "check", .use = "check --file PATH",
    .summary = "Try a policy file on the running server without storing it",
    .long_help = "Checks a policy file the way \"policy set\" and a reload do: it must load, and\n"
                 "compile for the running server's users and nodes, its tests passing. Nothing\n"
                 "is stored. Needs the server (unix socket or HEADSCALE_CLI_ADDRESS), or\n"
                 "--bypass-grpc-and-access-database-directly to check against the users and\n"
                 "nodes in the database; \"debug policy\" checks a policy offline against a\n"
                 "topology file.",
    .flags = FLAGS({ "file", 'f', CLI_STRING, NULL,
                     "Policy document to check (HuJSON or YAML)", false }, BYPASS_FLAG),
    .run = cli_cmd_policy_check, .max_args = 0,
};

static const struct cli_cmd cmd_policy = {
    .name = "policy", .use = "policy", .summary = "Show, check and replace the access policy",
    .subs = SUBS(&cmd_policy_check, &cmd_policy_get, &cmd_policy_set),
};

/* ---- debug ---- */

static const struct cli_cmd cmd_debug_policy = {
    .name = "policy", .use = "policy --policy FILE --topology FILE",
    .summary = "Compile a policy for a described tailnet and show each node's view",
    .long_help =
        "Works offline: no server, configuration or database is involved.\n\n"
        "--policy is a policy document (YAML when the name ends in .yaml or .yml, HuJSON\n"
        "otherwise). --topology is a JSON file describing the tailnet:\n"
        "  {\"users\": [{\"name\": \"alice\", \"email\": \"alice@example.com\"}],\n"
        "   \"nodes\": {\"laptop\": {\"user\": \"alice\", \"tags\": [], \"ipv4\": \"100.64.0.1\",\n"
        "              \"ipv6\": \"fd7a:115c:a1e0::1\", \"routable_ips\": [],\n"
        "              \"approved_routes\": []}}}\n"
        "A node's \"user\" is a user name; leave it out for a tagged node. A node may\n"
        "have an \"id\", its place in registration order: of two routers for one prefix,\n"
        "the lower id is the primary.\n\n"
        "For every node, in name order, prints the peers it would see, the routes it would\n"
        "reach through them, its packet filter, who may SSH to it and its capabilities.\n"
        "With -o json the result is one object keyed by node name. When the policy does\n"
        "not load or compile, the reason goes to stderr and the exit status is 1.",
    .flags = FLAGS({ "policy", 0, CLI_STRING, NULL,
                     "The policy to compile: HuJSON, or YAML by file name", false },
                   { "topology", 0, CLI_STRING, NULL, "Tailnet description (JSON)", false }),
    .run = cli_cmd_debug_policy, .max_args = 0,
};

static const struct cli_cmd cmd_debug_create_node = {
    .name = "create-node", .use = "create-node --user USER --key ID --name NAME",
    .summary = "Make up a pending login, to try auth register, approve or reject on",
    .long_help = "Starts a pending interactive login under the ID --key (\"hskey-authreq-\" and\n"
                 "24 letters, digits, '-' or '_'; or, as headscale 0.22 took it, \"nodekey:\"\n"
                 "and 64 hex digits) from a made-up machine named --name that announces\n"
                 "--route. \"auth register --auth-id ID --user USER\" then makes it a node\n"
                 "(which never connects). Prints the node it would be.",
    .flags = FLAGS({ "key", 'k', CLI_STRING, NULL, "ID of the pending login to create", false },
                   { "name", 0, CLI_STRING, NULL, "Host name of the made-up machine", false },
                   { "route", 'r', CLI_LIST, NULL,
                     "Routes it announces (comma separated or repeated)", false },
                   { "user", 'u', CLI_STRING, NULL, "User named in the printed node", false }),
    .run = cli_cmd_debug_create_node, .max_args = 0,
};

static const struct cli_cmd cmd_debug = {
    .name = "debug", .use = "debug", .summary = "Offline policy checks and test helpers",
    .subs = SUBS(&cmd_debug_create_node, &cmd_debug_policy),
};

/* ---- root ---- */

const struct cli_cmd cli_root = {
    .name = "headscale", .use = "headscale",
    .summary = "A Tailscale control server that stands in for headscale",
    .long_help = "A self-hosted control server for Tailscale clients, run and managed with\n"
                 "headscale's commands, configuration and REST API.",
    .pflags = FLAGS({ "config", 'c', CLI_STRING, NULL,
                      "Configuration file or directory (else $HEADSCALE_CONFIG, then "
                      "config.yaml in /etc/headscale, ~/.headscale or .)", false },
                    { "output", 'o', CLI_STRING, NULL, OUTPUT_HELP, false },
                    { "force", 0, CLI_BOOL, "false",
                      "Answer yes to every confirmation prompt", false }),
    .subs = SUBS(&cmd_apikeys, &cmd_auth, &cmd_completion, &cmd_configtest, &cmd_debug,
                 &cmd_generate, &cmd_health, &cmd_help, &cmd_mockoidc,
                 &cmd_nodes, &cmd_policy, &cmd_preauthkeys, &cmd_routes, &cmd_serve, &cmd_users,
                 &cmd_version),
};
