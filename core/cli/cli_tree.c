/* The `headscale` command tree: headscale 0.22.3's commands, aliases and flags, plus the
 * current tree's where they don't clash. Adding a subcommand = one entry here + a handler. */
#include "cli/cli_internal.h"

#define ALIASES(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define FLAGS(...) ((const struct cli_flag[]){ __VA_ARGS__, { 0 } })
#define SUBS(...) ((const struct cli_cmd *const[]){ __VA_ARGS__, NULL })

#define OUTPUT_HELP "Output format. Empty for human-readable, 'json', 'json-line' or 'yaml'"
#define EXPIRATION_HELP "Human-readable expiration of the key (e.g. 30m, 24h)"

/* ---- serve, configtest, version, generate ---- */

static const struct cli_cmd cmd_serve = {
    .name = "serve", .use = "serve", .summary = "Launches the headscale server",
    .run = cli_cmd_serve, .max_args = 0,
};

static const struct cli_cmd cmd_configtest = {
    .name = "configtest", .use = "configtest", .summary = "Test the configuration.",
    .long_help = "Run a test of the configuration and exit.",
    .run = cli_cmd_configtest, .max_args = 0,
};

static const struct cli_cmd cmd_version = {
    .name = "version", .use = "version", .summary = "Print the version.",
    .long_help = "The version of headscale.",
    .run = cli_cmd_version, .max_args = 0,
};

static const struct cli_cmd cmd_gen_private_key = {
    .name = "private-key", .use = "private-key",
    .summary = "Generate a private key for the headscale server",
    .run = cli_cmd_generate_private_key, .max_args = 0,
};

static const struct cli_cmd cmd_generate = {
    .name = "generate", .aliases = ALIASES("gen"), .use = "generate",
    .summary = "Generate commands", .subs = SUBS(&cmd_gen_private_key),
};

/* ---- users ---- */

static const struct cli_cmd cmd_users_create = {
    .name = "create", .aliases = ALIASES("c", "new"), .use = "create NAME",
    .summary = "Creates a new user",
    .flags = FLAGS({ "display-name", 'd', CLI_STRING, NULL, "Display name", false },
                   { "email", 'e', CLI_STRING, NULL, "Email", false },
                   { "picture-url", 'p', CLI_STRING, NULL, "Profile picture URL", false }),
    .run = cli_cmd_users_create, .min_args = 1, .max_args = 1,
};

static const struct cli_cmd cmd_users_list = {
    .name = "list", .aliases = ALIASES("ls", "show"), .use = "list",
    .summary = "List all the users",
    .flags = FLAGS({ "identifier", 'i', CLI_STRING, NULL, "User identifier (ID)", false },
                   { "name", 'n', CLI_STRING, NULL, "Username", false },
                   { "email", 'e', CLI_STRING, NULL, "Email", false }),
    .run = cli_cmd_users_list, .max_args = 0,
};

static const struct cli_cmd cmd_users_destroy = {
    .name = "destroy", .aliases = ALIASES("delete"),
    .use = "destroy NAME | --identifier ID | --name NAME", .summary = "Destroys a user",
    .long_help = "Destroys a user and its pre-auth keys, after a confirmation prompt unless\n"
                 "--force is given. NAME may also be a numeric user ID.",
    .flags = FLAGS({ "identifier", 'i', CLI_STRING, NULL, "User identifier (ID)", false },
                   { "name", 'n', CLI_STRING, NULL, "Username", false }),
    .run = cli_cmd_users_destroy, .max_args = 1,
};

static const struct cli_cmd cmd_users_rename = {
    .name = "rename", .aliases = ALIASES("mv"),
    .use = "rename OLD_NAME NEW_NAME | (--identifier ID | --name NAME) --new-name NEW_NAME",
    .summary = "Renames a user",
    .flags = FLAGS({ "identifier", 'i', CLI_STRING, NULL, "User identifier (ID)", false },
                   { "name", 'n', CLI_STRING, NULL, "Username", false },
                   { "new-name", 'r', CLI_STRING, NULL, "New username", false }),
    .run = cli_cmd_users_rename, .max_args = 2,
};

static const struct cli_cmd cmd_users = {
    .name = "users", .aliases = ALIASES("user", "namespace", "namespaces", "ns"),
    .use = "users", .summary = "Manage the users of Headscale",
    .subs = SUBS(&cmd_users_create, &cmd_users_list, &cmd_users_destroy, &cmd_users_rename),
};

/* ---- preauthkeys ---- */

static const struct cli_cmd cmd_pak_list = {
    .name = "list", .aliases = ALIASES("ls", "show"), .use = "list",
    .summary = "List the preauthkeys (all, or those of --user)",
    .run = cli_cmd_preauthkeys_list, .max_args = 0,
};

static const struct cli_cmd cmd_pak_create = {
    .name = "create", .aliases = ALIASES("c", "new"), .use = "create",
    .summary = "Creates a new preauthkey for --user, or a tagged one with --tags",
    .flags = FLAGS({ "reusable", 0, CLI_BOOL, "false", "Make the preauthkey reusable", false },
                   { "ephemeral", 0, CLI_BOOL, "false", "Preauthkey for ephemeral nodes", false },
                   { "expiration", 'e', CLI_STRING, "1h", EXPIRATION_HELP, false },
                   { "tags", 0, CLI_LIST, NULL, "Tags to automatically assign to node", false }),
    .run = cli_cmd_preauthkeys_create, .max_args = 0,
};

static const struct cli_cmd cmd_pak_expire = {
    .name = "expire", .aliases = ALIASES("revoke", "exp", "e"), .use = "expire KEY | --id ID",
    .summary = "Expire a preauthkey",
    .long_help = "KEY is the full key, or its prefix as shown by \"preauthkeys list\".",
    .flags = FLAGS({ "id", 'i', CLI_STRING, NULL, "Authkey ID", false }),
    .run = cli_cmd_preauthkeys_expire, .max_args = 1,
};

static const struct cli_cmd cmd_pak_delete = {
    .name = "delete", .aliases = ALIASES("del", "rm", "d"), .use = "delete KEY | --id ID",
    .summary = "Delete a preauthkey",
    .flags = FLAGS({ "id", 'i', CLI_STRING, NULL, "Authkey ID", false }),
    .run = cli_cmd_preauthkeys_delete, .max_args = 1,
};

static const struct cli_cmd cmd_preauthkeys = {
    .name = "preauthkeys", .aliases = ALIASES("preauthkey", "authkey", "pre"),
    .use = "preauthkeys", .summary = "Handle the preauthkeys in Headscale",
    .pflags = FLAGS({ "user", 'u', CLI_STRING, NULL, "User (name or ID)", false },
                    { "namespace", 'n', CLI_STRING, NULL, "User", true }),
    .subs = SUBS(&cmd_pak_list, &cmd_pak_create, &cmd_pak_expire, &cmd_pak_delete),
};

/* ---- apikeys ---- */

static const struct cli_cmd cmd_api_list = {
    .name = "list", .aliases = ALIASES("ls", "show"), .use = "list",
    .summary = "List the Api keys for headscale", .run = cli_cmd_apikeys_list, .max_args = 0,
};

static const struct cli_cmd cmd_api_create = {
    .name = "create", .aliases = ALIASES("c", "new"), .use = "create",
    .summary = "Creates a new Api key",
    .long_help = "Creates a new Api key, the Api key is only visible on creation\n"
                 "and cannot be retrieved again.\n"
                 "If you lose a key, create a new one and revoke (expire) the old one.",
    .flags = FLAGS({ "expiration", 'e', CLI_STRING, "90d", EXPIRATION_HELP, false }),
    .run = cli_cmd_apikeys_create, .max_args = 0,
};

#define APIKEY_SELECT_FLAGS                                                                  \
    FLAGS({ "prefix", 'p', CLI_STRING, NULL, "ApiKey prefix", false },                              \
          { "id", 'i', CLI_STRING, NULL, "ApiKey ID", false })

static const struct cli_cmd cmd_api_expire = {
    .name = "expire", .aliases = ALIASES("revoke", "exp", "e"),
    .use = "expire --prefix PREFIX | --id ID", .summary = "Expire an ApiKey",
    .flags = APIKEY_SELECT_FLAGS, .run = cli_cmd_apikeys_expire, .max_args = 0,
};

static const struct cli_cmd cmd_api_delete = {
    .name = "delete", .aliases = ALIASES("remove", "del"),
    .use = "delete --prefix PREFIX | --id ID", .summary = "Delete an ApiKey",
    .flags = APIKEY_SELECT_FLAGS, .run = cli_cmd_apikeys_delete, .max_args = 0,
};

static const struct cli_cmd cmd_apikeys = {
    .name = "apikeys", .aliases = ALIASES("apikey", "api"), .use = "apikeys",
    .summary = "Create, list and expire API keys",
    .subs = SUBS(&cmd_api_list, &cmd_api_create, &cmd_api_expire, &cmd_api_delete),
};

/* ---- nodes, auth ---- */

#define NODE_ID_HELP "Node identifier (ID)"
#define NODE_ID_FLAG { "identifier", 'i', CLI_STRING, NULL, NODE_ID_HELP, false }
#define NAMESPACE_FLAG { "namespace", 'n', CLI_STRING, NULL, "User", true }

static const struct cli_cmd cmd_nodes_list = {
    .name = "list", .aliases = ALIASES("ls", "show"), .use = "list",
    .summary = "List nodes",
    .long_help = "List nodes, all or those of --user (name or ID). --tags adds 0.22's\n"
                 "ForcedTags, InvalidTags and ValidTags columns.",
    .flags = FLAGS({ "user", 'u', CLI_STRING, NULL, "Filter by user (name or ID)", false },
                   NAMESPACE_FLAG,
                   { "tags", 't', CLI_BOOL, "false", "Show tags", false }),
    .run = cli_cmd_nodes_list, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_list_routes = {
    .name = "list-routes", .aliases = ALIASES("lsr", "routes"), .use = "list-routes",
    .summary = "List routes available on nodes",
    .long_help = "List the nodes that announce, have approved or serve routes (all nodes, or\n"
                 "the one of --identifier), one prefix per line.",
    .flags = FLAGS(NODE_ID_FLAG),
    .run = cli_cmd_nodes_list_routes, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_register = {
    .name = "register", .use = "register",
    .summary = "Registers a node to your network",
    .long_help = "Completes an interactive login: KEY is the ID at the end of the URL the\n"
                 "client shows (<server_url>/register/<ID>). Same as \"auth register\".",
    .flags = FLAGS({ "user", 'u', CLI_STRING, NULL, "User", false }, NAMESPACE_FLAG,
                   { "key", 'k', CLI_STRING, NULL, "Key", false }),
    .run = cli_cmd_nodes_register, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_delete = {
    .name = "delete", .aliases = ALIASES("del"), .use = "delete",
    .summary = "Delete a node",
    .long_help = "Delete a node, after a confirmation prompt unless --force is given.",
    .flags = FLAGS(NODE_ID_FLAG),
    .run = cli_cmd_nodes_delete, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_expire = {
    .name = "expire", .aliases = ALIASES("logout", "exp", "e"), .use = "expire",
    .summary = "Expire (log out) a node in your network",
    .long_help = "Expiring a node will keep the node in the database and force it to reauthenticate.\n"
                 "Without flags the node expires now; --expiry sets the time, --disable\n"
                 "makes it never expire.",
    .flags = FLAGS(NODE_ID_FLAG,
                   { "expiry", 'e', CLI_STRING, NULL,
                     "Set expire to (RFC3339 format, e.g. 2025-08-27T10:00:00Z), or leave empty "
                     "to expire immediately.", false },
                   { "disable", 'd', CLI_BOOL, "false",
                     "Disable key expiry (node will never expire)", false }),
    .run = cli_cmd_nodes_expire, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_rename = {
    .name = "rename", .use = "rename NEW_NAME",
    .summary = "Renames a node in your network",
    .long_help = "Sets the node's given name: a DNS label (lowercase letters, digits, '-'),\n"
                 "unique in the tailnet.",
    .flags = FLAGS(NODE_ID_FLAG),
    .run = cli_cmd_nodes_rename, .min_args = 1, .max_args = 1,
};

static const struct cli_cmd cmd_nodes_move = {
    .name = "move", .aliases = ALIASES("mv"), .use = "move",
    .summary = "Move node to another user",
    .flags = FLAGS(NODE_ID_FLAG, { "user", 'u', CLI_STRING, NULL, "New user (name or ID)", false },
                   NAMESPACE_FLAG),
    .run = cli_cmd_nodes_move, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_tag = {
    .name = "tag", .aliases = ALIASES("tags", "t"), .use = "tag",
    .summary = "Manage the tags of a node",
    .long_help = "Replaces the tags of a node with --tags (comma separated or repeated,\n"
                 "e.g. -t tag:a,tag:b).",
    .flags = FLAGS(NODE_ID_FLAG,
                   { "tags", 't', CLI_LIST, NULL, "List of tags to add to the node", false }),
    .run = cli_cmd_nodes_tag, .max_args = 0,
};

static const struct cli_cmd cmd_nodes_approve_routes = {
    .name = "approve-routes", .use = "approve-routes",
    .summary = "Manage the approved routes of a node",
    .long_help = "Replaces the approved routes of a node with --routes.",
    .flags = FLAGS(NODE_ID_FLAG,
                   { "routes", 'r', CLI_LIST, NULL,
                     "List of routes that will be approved (comma-separated, e.g. "
                     "\"10.0.0.0/8,192.168.0.0/24\" or empty string to remove all approved "
                     "routes)", false }),
    .run = cli_cmd_nodes_approve_routes, .max_args = 0,
};

static const struct cli_cmd cmd_nodes = {
    .name = "nodes", .aliases = ALIASES("node", "machine", "machines"), .use = "nodes",
    .summary = "List, register, tag and remove nodes",
    .subs = SUBS(&cmd_nodes_approve_routes, &cmd_nodes_delete, &cmd_nodes_expire,
                 &cmd_nodes_list, &cmd_nodes_list_routes, &cmd_nodes_move, &cmd_nodes_register,
                 &cmd_nodes_rename, &cmd_nodes_tag),
};

static const struct cli_cmd cmd_auth_register = {
    .name = "register", .use = "register",
    .summary = "Register a node to your network",
    .long_help = "Completes a pending interactive login: --auth-id is the ID at the end of the\n"
                 "URL the client shows (<server_url>/register/<ID>).",
    .flags = FLAGS({ "user", 'u', CLI_STRING, NULL, "User", false },
                   { "auth-id", 0, CLI_STRING, NULL, "Auth ID", false }),
    .run = cli_cmd_auth_register, .max_args = 0,
};

static const struct cli_cmd cmd_auth = {
    .name = "auth", .use = "auth", .summary = "Manage node authentication and approval",
    .subs = SUBS(&cmd_auth_register),
};

/* ---- routes (headscale 0.22.3) ---- */

#define ROUTE_ID_FLAG { "route", 'r', CLI_STRING, NULL, "Route identifier (ID)", false }

static const struct cli_cmd cmd_routes_list = {
    .name = "list", .aliases = ALIASES("ls", "show"), .use = "list",
    .summary = "List all routes",
    .long_help = "Lists every announced or approved route with its route ID (all nodes, or the\n"
                 "one of --identifier). Enabled means approved; Primary says which node serves\n"
                 "a subnet route (\"-\" for exit routes).",
    .flags = FLAGS(NODE_ID_FLAG),
    .run = cli_cmd_routes_list, .max_args = 0,
};

static const struct cli_cmd cmd_routes_enable = {
    .name = "enable", .use = "enable --route ID",
    .summary = "Set a route as enabled",
    .long_help = "Approves the route of --route, which its node must announce. Enabling an\n"
                 "exit route (0.0.0.0/0 or ::/0) enables both.",
    .flags = FLAGS(ROUTE_ID_FLAG), .run = cli_cmd_routes_enable, .max_args = 0,
};

static const struct cli_cmd cmd_routes_disable = {
    .name = "disable", .use = "disable --route ID",
    .summary = "Set as disabled a given route",
    .long_help = "Withdraws the approval of the route of --route (exit routes: both).",
    .flags = FLAGS(ROUTE_ID_FLAG), .run = cli_cmd_routes_disable, .max_args = 0,
};

static const struct cli_cmd cmd_routes_delete = {
    .name = "delete", .use = "delete --route ID",
    .summary = "Delete a given route",
    .long_help = "Withdraws the approval of the route of --route (exit routes: both) and forgets\n"
                 "its ID; a route the node still announces is listed again under a new ID.",
    .flags = FLAGS(ROUTE_ID_FLAG), .run = cli_cmd_routes_delete, .max_args = 0,
};

static const struct cli_cmd cmd_routes = {
    .name = "routes", .aliases = ALIASES("r", "route"), .use = "routes",
    .summary = "Manage the routes of Headscale",
    .long_help = "headscale 0.22's route commands, by route ID. \"nodes list-routes\" and\n"
                 "\"nodes approve-routes\" change the same approvals.",
    .subs = SUBS(&cmd_routes_delete, &cmd_routes_disable, &cmd_routes_enable, &cmd_routes_list),
};

/* ---- policy ---- */

static const struct cli_cmd cmd_policy_get = {
    .name = "get", .aliases = ALIASES("show", "view", "fetch"), .use = "get",
    .summary = "Print the current ACL Policy", .run = cli_cmd_policy_get, .max_args = 0,
};

static const struct cli_cmd cmd_policy_set = {
    .name = "set", .aliases = ALIASES("put", "update"), .use = "set --file PATH",
    .summary = "Replace the policy in force",
    .long_help = "Sends a policy document (HuJSON, or YAML) to the server, which stores it and\n"
                 "puts it in force at once if it loads, compiles for the tailnet and passes its\n"
                 "tests; otherwise it is refused with the reason and nothing changes. Needs\n"
                 "policy.mode \"database\".",
    .flags = FLAGS({ "file", 'f', CLI_STRING, NULL, "Policy document to send (HuJSON or YAML)", false }),
    .run = cli_cmd_policy_set, .max_args = 0,
};

static const struct cli_cmd cmd_policy_check = {
    .name = "check", .use = "check --file PATH", .summary = "Check the Policy file for errors",
    .long_help = "Checks a policy file the way \"policy set\" and a reload do: it must load, and\n"
                 "compile for the running server's users and nodes, its tests passing. Nothing\n"
                 "is stored. Needs the server (unix socket or HEADSCALE_CLI_ADDRESS); \"debug\n"
                 "policy\" checks a policy offline against a topology file.",
    .flags = FLAGS({ "file", 'f', CLI_STRING, NULL, "Policy document to check (HuJSON or YAML)", false }),
    .run = cli_cmd_policy_check, .max_args = 0,
};

static const struct cli_cmd cmd_policy = {
    .name = "policy", .use = "policy", .summary = "Manage the Headscale ACL Policy",
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
    .flags = FLAGS({ "policy", 0, CLI_STRING, NULL, "Policy file (HuJSON or YAML)", false },
                   { "topology", 0, CLI_STRING, NULL, "Tailnet description (JSON)", false }),
    .run = cli_cmd_debug_policy, .max_args = 0,
};

static const struct cli_cmd cmd_debug = {
    .name = "debug", .use = "debug", .summary = "Tools for looking into headscale's decisions",
    .subs = SUBS(&cmd_debug_policy),
};

/* ---- root ---- */

const struct cli_cmd cli_root = {
    .name = "headscale", .use = "headscale", .summary = "headscale - a Tailscale control server",
    .long_help = "A self-hosted control server for Tailscale clients, run and managed with\n"
                 "headscale's commands, configuration and REST API.",
    .pflags = FLAGS({ "config", 'c', CLI_STRING, NULL,
                      "config file (default is /etc/headscale/config.yaml)", false },
                    { "output", 'o', CLI_STRING, NULL, OUTPUT_HELP, false },
                    { "force", 0, CLI_BOOL, "false", "Disable prompts and forces the execution", false }),
    .subs = SUBS(&cmd_apikeys, &cmd_auth, &cmd_configtest, &cmd_debug, &cmd_generate,
                 &cmd_nodes, &cmd_policy, &cmd_preauthkeys, &cmd_routes, &cmd_serve, &cmd_users,
                 &cmd_version),
};
