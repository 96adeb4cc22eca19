/* headscale-webadmin's command line: the options, their defaults and the checks between them
 * (the OIDC sign-in's options are all given or none). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "webadmin/webadmin.h"

const char webadmin_usage[] =
    "Usage: headscale-webadmin --server URL [options]\n"
    "\n"
    "The web admin of headscale: a FastCGI program for nginx. It signs administrators in\n"
    "with an API key, or through an OpenID provider, and changes everything through the\n"
    "server's REST API.\n"
    "\n"
    "  --server URL        the server's API, http(s)://host:port (required)\n"
    "  --templates DIR     the HTML templates (default: templates)\n"
    "  --ca-file FILE      CA bundle to trust for an https server\n"
    "  --base PATH         where nginx serves the pages (default: /admin)\n"
    "  --listen SOCKET     listen on this unix socket (default: the socket on stdin)\n"
    "  --session-max DUR   sessions end this long after sign-in (default: 12h)\n"
    "  --session-idle DUR  ... or after this long unused (default: 1h)\n"
    "  --sessions-file F   keep sessions in F (mode 0600) so that a restart signs no one out\n"
    "  -h, --help          this text\n"
    "\n"
    "Sign-in through an OpenID provider (all of the first five and one admin list, or none):\n"
    "  --public-url URL    the origin browsers reach the pages at, e.g. https://hs.example.com\n"
    "                      (the provider sends them back to URL/admin/oidc/callback)\n"
    "  --oidc-issuer URL   the provider's issuer\n"
    "  --oidc-client-id ID           the web admin's client at the provider\n"
    "  --oidc-client-secret-file F   the client's secret (F readable by its owner only)\n"
    "  --api-key-file F    an API key of the server (F readable by its owner only): it\n"
    "                      creates each such session's own API key, which expires with the\n"
    "                      session and at sign-out (see the API keys page)\n"
    "  --oidc-admin-email ADDR   an administrator by verified e-mail address (repeatable)\n"
    "  --oidc-admin-group NAME   the members of a provider group (repeatable)\n"
    "  --oidc-admin-user ISSUER/SUBJECT  one account of the provider (repeatable)\n"
    "  --oidc-scope WORDS  the scopes asked for (default: \"openid profile email\"; add\n"
    "                      \"groups\" when the provider needs it for the groups claim)\n"
    "  --oidc-name TEXT    the provider's name on the sign-in button (default: its host)\n";

static int duration_arg(const char *name, const char *text, int64_t *out, char *err,
                        size_t errsize)
{
    if (hs_parse_duration(text, out) < 0 || *out <= 0) {
        snprintf(err, errsize, "%s: \"%s\" is not a duration (e.g. 30m, 12h)", name, text);
        return -EINVAL;
    }
    return 0;
}

static bool http_url(const char *s)
{
    return s && (hs_has_prefix(s, "http://") || hs_has_prefix(s, "https://"));
}

/* The OIDC sign-in's options: none, or all that it needs. */
static int check_oidc(const struct webadmin_config *c, char *err, size_t errsize)
{
    const struct { const char *name; bool set; } need[] = {
        { "--public-url", c->public_url },
        { "--oidc-issuer", c->oidc_issuer },
        { "--oidc-client-id", c->oidc_client_id },
        { "--oidc-client-secret-file", c->oidc_client_secret_file },
        { "--api-key-file", c->api_key_file },
        { "an --oidc-admin-email, --oidc-admin-group or --oidc-admin-user",
          c->admin_emails.n || c->admin_groups.n || c->admin_ids.n },
    };
    bool any = c->oidc_name || c->oidc_scope;
    struct hs_buf missing;
    int rc = 0;

    for (size_t i = 0; i < HS_ARRAY_LEN(need); i++)
        any |= need[i].set;
    if (!any)
        return 0;
    hs_buf_init(&missing, 1024);
    for (size_t i = 0; i < HS_ARRAY_LEN(need); i++)
        if (!need[i].set)
            hs_buf_appendf(&missing, "%s%s", missing.len ? ", " : "", need[i].name);
    if (missing.len) {
        snprintf(err, errsize, "the sign-in through an OpenID provider is configured in part: "
                 "it also needs %s", missing.data);
        rc = -EINVAL;
    } else if (!http_url(c->public_url) || !http_url(c->oidc_issuer)) {
        snprintf(err, errsize, "--public-url and --oidc-issuer are http(s) URLs");
        rc = -EINVAL;
    } else if (c->public_url[strlen(c->public_url) - 1] == '/' ||
               strchr(c->public_url + strlen("https://"), '/')) {
        snprintf(err, errsize, "--public-url is an origin like https://hs.example.com (no path: "
                 "--base gives it)");
        rc = -EINVAL;
    }
    hs_buf_free(&missing);
    return rc;
}

static int check(const struct webadmin_config *c, char *err, size_t errsize)
{
    if (!http_url(c->server_url)) {
        snprintf(err, errsize, "--server http(s)://host:port is required");
        return -EINVAL;
    }
    if (c->base_path[0] != '/' || c->base_path[strlen(c->base_path) - 1] == '/') {
        snprintf(err, errsize, "--base is a path like /admin (no trailing slash)");
        return -EINVAL;
    }
    return check_oidc(c, err, errsize);
}

int webadmin_options(int argc, char **argv, struct webadmin_options *o, char *err,
                     size_t errsize)
{
    static const struct option longopts[] = {
        { "server", required_argument, NULL, 's' },
        { "templates", required_argument, NULL, 't' },
        { "ca-file", required_argument, NULL, 'c' },
        { "base", required_argument, NULL, 'b' },
        { "listen", required_argument, NULL, 'l' },
        { "session-max", required_argument, NULL, 'm' },
        { "session-idle", required_argument, NULL, 'i' },
        { "sessions-file", required_argument, NULL, 'f' },
        { "public-url", required_argument, NULL, 'P' },
        { "oidc-issuer", required_argument, NULL, 'I' },
        { "oidc-client-id", required_argument, NULL, 'C' },
        { "oidc-client-secret-file", required_argument, NULL, 'S' },
        { "api-key-file", required_argument, NULL, 'K' },
        { "oidc-admin-email", required_argument, NULL, 'E' },
        { "oidc-admin-group", required_argument, NULL, 'G' },
        { "oidc-admin-user", required_argument, NULL, 'U' },
        { "oidc-scope", required_argument, NULL, 'O' },
        { "oidc-name", required_argument, NULL, 'N' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    struct webadmin_config *c = &o->cfg;
    int opt, rc = 0;

    *o = (struct webadmin_options){ .cfg = { .templates_dir = "templates",
                                             .base_path = "/admin",
                                             .session_max_us = 12 * 3600 * HS_USEC_PER_SEC,
                                             .session_idle_us = 3600 * HS_USEC_PER_SEC } };
    optind = 0; /* GNU getopt: start over (the unit tests call this more than once) */
    opterr = 0;
    while (rc == 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 's': c->server_url = optarg; break;
        case 't': c->templates_dir = optarg; break;
        case 'c': c->ca_file = optarg; break;
        case 'b': c->base_path = optarg; break;
        case 'l': o->listen = optarg; break;
        case 'f': c->sessions_file = optarg; break;
        case 'm': rc = duration_arg("--session-max", optarg, &c->session_max_us, err, errsize); break;
        case 'i': rc = duration_arg("--session-idle", optarg, &c->session_idle_us, err, errsize); break;
        case 'P': c->public_url = optarg; break;
        case 'I': c->oidc_issuer = optarg; break;
        case 'C': c->oidc_client_id = optarg; break;
        case 'S': c->oidc_client_secret_file = optarg; break;
        case 'K': c->api_key_file = optarg; break;
        case 'E': hs_strv_push(&c->admin_emails, optarg); break;
        case 'G': hs_strv_push(&c->admin_groups, optarg); break;
        case 'U': hs_strv_push(&c->admin_ids, optarg); break;
        case 'O': c->oidc_scope = optarg; break;
        case 'N': c->oidc_name = optarg; break;
        case 'h': o->help = true; return 0;
        default:
            /* Not the option's text: a secret typed in place of a file name stays unsaid. */
            snprintf(err, errsize, "unknown option or missing value (see --help)");
            rc = -EINVAL;
        }
    }
    if (rc == 0 && optind < argc) {
        snprintf(err, errsize, "unexpected argument \"%.100s\" (see --help)", argv[optind]);
        rc = -EINVAL;
    }
    if (rc == 0)
        rc = check(c, err, errsize);
    if (rc < 0)
        webadmin_options_free(o);
    return rc;
}

void webadmin_options_free(struct webadmin_options *o)
{
    hs_strv_free(&o->cfg.admin_emails);
    hs_strv_free(&o->cfg.admin_groups);
    hs_strv_free(&o->cfg.admin_ids);
}
