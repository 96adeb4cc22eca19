/* The OIDC login's web side: /register/<id> sends the browser to the provider, and
 * /oidc/callback answers with a page saying how it ended (templates/oidc.html). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"

#define OIDC_COOKIE "hs_oidc_state"
#define OIDC_PAGE_MAX 65536

extern const char server_oidc_page[]; /* templates/oidc.html */

static void html_escape(struct hs_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': hs_buf_puts(b, "&lt;"); break;
        case '>': hs_buf_puts(b, "&gt;"); break;
        case '&': hs_buf_puts(b, "&amp;"); break;
        case '"': hs_buf_puts(b, "&quot;"); break;
        case '\'': hs_buf_puts(b, "&#39;"); break;
        default: hs_buf_append(b, s, 1);
        }
    }
}

/* The page with its three blanks filled in, every value escaped. */
static void page(struct server_oidc_reply *r, int status, const char *title, const char *msg,
                 const char *next)
{
    const char *p = server_oidc_page, *mark;

    r->status = status;
    hs_buf_init(&r->body, OIDC_PAGE_MAX);
    while ((mark = strstr(p, "{{"))) {
        const char *end = strstr(mark, "}}");
        size_t n = end ? (size_t)(end - mark - 2) : 0;
        hs_buf_append(&r->body, p, (size_t)(mark - p));
        if (n == 5 && strncmp(mark + 2, "TITLE", 5) == 0)
            html_escape(&r->body, title);
        else if (n == 7 && strncmp(mark + 2, "MESSAGE", 7) == 0)
            html_escape(&r->body, msg);
        else if (n == 4 && strncmp(mark + 2, "NEXT", 4) == 0)
            html_escape(&r->body, next);
        p = end ? end + 2 : mark + 2;
    }
    hs_buf_puts(&r->body, p);
}

void server_oidc_register(struct auth_oidc *o, const struct hs_config *cfg, const char *id,
                          struct server_oidc_reply *r)
{
    char state[AUTH_OIDC_STATE_MAX], why[512];
    int rc;

    *r = (struct server_oidc_reply){ 0 };
    if ((rc = auth_oidc_begin(o, id, &r->location, state, why, sizeof(why))) < 0) {
        if (rc != -ENOENT)
            log_warnx("oidc: cannot start a login: %s", why);
        page(r, rc == -ENOENT ? 404 : 503, "Login not possible",
             rc == -ENOENT ? why : "The identity provider cannot be reached right now.",
             "Run tailscale up again, or try again in a moment.");
        return;
    }
    /* Only the callback needs it back; Lax lets the provider's redirect carry it. */
    r->cookie = hs_aprintf(OIDC_COOKIE "=%s; Path=/oidc/callback; Max-Age=900; HttpOnly; "
                           "SameSite=Lax%s", state,
                           hs_has_prefix(cfg->server_url, "https://") ? "; Secure" : "");
    r->status = 302;
    hs_buf_init(&r->body, 1);
}

void server_oidc_callback(struct auth_oidc *o, const char *state, const char *code,
                          const char *cookie, struct server_oidc_reply *r)
{
    struct auth_oidc_login login;
    char why[512], msg[768];
    int rc;

    *r = (struct server_oidc_reply){ 0 };
    rc = auth_oidc_callback(o, state, code, cookie, &login, why, sizeof(why));
    if (rc == 0) {
        snprintf(msg, sizeof(msg), "The device %s now belongs to %s.", login.node.given_name,
                 login.user.name);
        log_info("oidc: node %llu (%s) registered to user %llu (%s)",
                 (unsigned long long)login.node.id, login.node.given_name,
                 (unsigned long long)login.user.id, login.user.name);
        page(r, 200, "Logged in", msg, "You can close this window.");
        auth_oidc_login_free(&login);
        return;
    }
    if (rc != -EACCES && rc != -EINVAL)
        log_warnx("oidc: a login failed: %s", why);
    page(r, rc == -EACCES ? 403 : rc == -EINVAL ? 400 : 502,
         rc == -EACCES ? "Access refused" : "Login failed", why,
         rc == -EACCES ? "Ask the administrator of this network for access."
                       : "Run tailscale up again to start a new login.");
}

void server_oidc_reply_free(struct server_oidc_reply *r)
{
    free(r->location);
    free(r->cookie);
    hs_buf_free(&r->body);
}
