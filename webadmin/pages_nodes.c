/* The nodes list (search, filters, sort, pages) and a node's page with its changes. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "webadmin/wa_internal.h"

#define NODES_PER_PAGE 50
#define NODES_MAX_PAGE 100000

struct node_filter {
    const char *q, *user, *status, *sort;
};

static bool contains(const char *hay, const char *needle)
{
    return hay && strcasestr(hay, needle) != NULL;
}

/* Name, given name, user or an address contains q. */
static bool node_matches_q(const json_t *n, const char *q)
{
    const json_t *user = json_object_get(n, "user"), *ip;
    size_t i;

    if (contains(hs_json_str(n, "name"), q) || contains(hs_json_str(n, "givenName"), q) ||
        contains(hs_json_str(user, "name"), q))
        return true;
    json_array_foreach(json_object_get(n, "ipAddresses"), i, ip)
        if (contains(json_string_value(ip), q))
            return true;
    return false;
}

static bool node_shown(const json_t *n, const struct node_filter *f)
{
    bool online = json_is_true(json_object_get(n, "online"));
    bool expired = wa__time_past(hs_json_str(n, "expiry"));

    if (f->q && *f->q && !node_matches_q(n, f->q))
        return false;
    if (f->user && *f->user && !hs_streq(hs_json_str(json_object_get(n, "user"), "name"),
                                         f->user))
        return false;
    if (hs_streq(f->status, "online") && !online)
        return false;
    if (hs_streq(f->status, "offline") && online)
        return false;
    if (hs_streq(f->status, "expired") && !expired)
        return false;
    return true;
}

static const char *sort_text(const json_t *n, const char *sort_key)
{
    if (strcmp(sort_key, "user") == 0)
        return hs_json_str(json_object_get(n, "user"), "name");
    if (strcmp(sort_key, "lastseen") == 0)
        return hs_json_str(n, "lastSeen");
    return hs_json_str(n, "givenName");
}

/* qsort_r order of nodes by the sort key ("name", "user", "lastseen"), then by id. */
static int by_key(const void *a, const void *b, void *key)
{
    const char *sort_key = key;
    const json_t *na = *(json_t *const *)a, *nb = *(json_t *const *)b;
    const char *ta = sort_text(na, sort_key), *tb = sort_text(nb, sort_key);
    int c = strcmp(ta ? ta : "", tb ? tb : "");

    if (strcmp(sort_key, "lastseen") == 0)
        c = -c; /* most recent first */
    if (c == 0) {
        uint64_t ia = 0, ib = 0;
        hs_parse_u64(hs_json_str(na, "id"), UINT64_MAX, &ia);
        hs_parse_u64(hs_json_str(nb, "id"), UINT64_MAX, &ib);
        c = ia < ib ? -1 : ia > ib;
    }
    return c;
}

/* The row a list shows: the node with the few things made readable. */
static void decorate(json_t *n)
{
    char buf[40];
    json_t *ips = json_object_get(n, "ipAddresses"), *ip, *tags;
    struct hs_buf joined;
    size_t i;

    wa__human_time(hs_json_str(n, "lastSeen"), buf, sizeof(buf));
    json_object_set_new(n, "last_seen", json_string(buf));
    wa__human_time(hs_json_str(n, "expiry"), buf, sizeof(buf));
    json_object_set_new(n, "expires", json_string(buf));
    json_object_set_new(n, "expired", json_boolean(wa__time_past(hs_json_str(n, "expiry"))));
    hs_buf_init(&joined, 1u << 16);
    json_array_foreach(ips, i, ip)
        hs_buf_appendf(&joined, "%s%s", i ? ", " : "", json_string_value(ip));
    json_object_set_new(n, "ips", json_string(joined.len ? joined.data : ""));
    hs_buf_reset(&joined);
    tags = json_object_get(n, "tags");
    json_array_foreach(tags, i, ip)
        hs_buf_appendf(&joined, "%s%s", i ? " " : "", json_string_value(ip));
    json_object_set_new(n, "tags_text", json_string(joined.len ? joined.data : ""));
    hs_buf_free(&joined);
}

/* "?page=p&..." with the list's filters, for the pager's links. */
static char *page_query(const struct node_filter *f, uint64_t p)
{
    const char *names[] = { "q", "user", "status", "sort" };
    const char *values[] = { f->q, f->user, f->status, f->sort };
    struct hs_buf b;

    hs_buf_init(&b, 1u << 16);
    hs_buf_appendf(&b, "?page=%" PRIu64, p);
    for (size_t i = 0; i < HS_ARRAY_LEN(names); i++) {
        if (!values[i] || !*values[i])
            continue;
        hs_buf_appendf(&b, "&%s=", names[i]);
        tmpl_escape_url_component(&b, values[i], strlen(values[i]));
    }
    return hs_buf_steal(&b);
}

static void pager_link(json_t *j, const char *name, const struct node_filter *f, uint64_t p)
{
    char *q = page_query(f, p);

    json_object_set_new(j, name, json_string(q));
    free(q);
}

static json_t *pager(const struct node_filter *f, uint64_t page, uint64_t pages, size_t total)
{
    json_t *j = json_pack("{s:I, s:I, s:I}", "page", (json_int_t)page, "pages",
                          (json_int_t)pages, "total", (json_int_t)total);

    if (page > 1)
        pager_link(j, "prev", f, page - 1);
    if (page < pages)
        pager_link(j, "next", f, page + 1);
    return j;
}

/* The shown nodes of all (filtered and sorted), page `page` of them. */
static json_t *select_nodes(json_t *all, const struct node_filter *f, uint64_t *page,
                            uint64_t *pages, size_t *total)
{
    size_t n = 0, i;
    json_t **v = hs_xcalloc(json_array_size(all) + 1, sizeof(*v)), *el, *out = json_array();

    json_array_foreach(all, i, el)
        if (node_shown(el, f))
            v[n++] = el;
    qsort_r(v, n, sizeof(*v), by_key, (void *)(f->sort && *f->sort ? f->sort : "name"));
    *total = n;
    *pages = n ? (n + NODES_PER_PAGE - 1) / NODES_PER_PAGE : 1;
    if (*page > *pages)
        *page = *pages;
    for (i = (*page - 1) * NODES_PER_PAGE; i < n && i < *page * NODES_PER_PAGE; i++) {
        decorate(v[i]);
        json_array_append(out, v[i]);
    }
    free(v);
    return out;
}

static json_t *user_names(json_t *users, const char *selected)
{
    size_t i;
    json_t *u;

    json_array_foreach(users, i, u)
        json_object_set_new(u, "selected", json_boolean(hs_streq(hs_json_str(u, "name"),
                                                                 selected)));
    return users;
}

void wa__page_nodes(struct wa_ctx *x)
{
    struct node_filter f = { wa__form_get(&x->query, "q"), wa__form_get(&x->query, "user"),
                             wa__form_get(&x->query, "status"),
                             wa__form_get(&x->query, "sort") };
    const char *pq = wa__form_get(&x->query, "page");
    uint64_t page = 1, pages;
    size_t total;
    json_t *all, *users, *shown, *data;

    if (pq && (hs_parse_u64(pq, NODES_MAX_PAGE, &page) < 0 || page == 0))
        page = 1;
    if (!(all = wa__api_list(x, "/api/v1/node", "nodes")))
        return;
    if (!(users = wa__api_list(x, "/api/v1/user", "users"))) {
        json_decref(all);
        return;
    }
    shown = select_nodes(all, &f, &page, &pages, &total);
    data = json_pack("{s:o, s:o, s:o, s:s, s:b, s:b, s:b, s:b, s:b}", "nodes", shown, "users",
                     user_names(users, f.user), "pager", pager(&f, page, pages, total), "q",
                     f.q ? f.q : "", "status_online", hs_streq(f.status, "online"),
                     "status_offline", hs_streq(f.status, "offline"), "status_expired",
                     hs_streq(f.status, "expired"), "sort_user", hs_streq(f.sort, "user"),
                     "sort_lastseen", hs_streq(f.sort, "lastseen"));
    json_decref(all);
    wa__render(x, wa__page_status(x, data), "nodes", "Nodes", data);
}

json_t *wa__api_node(struct wa_ctx *x, uint64_t id, json_t **answer)
{
    char *path = hs_aprintf("/api/v1/node/%" PRIu64, id);
    json_t *node = NULL;
    long status;

    *answer = NULL;
    if (wa__api(x, "GET", path, NULL, &status, answer) == 0) {
        node = json_object_get(*answer, "node");
        if (status != 200 || !json_is_object(node)) {
            wa__error_page(x, status == 404 ? 404 : 502, wa__api_message(*answer));
            node = NULL;
        }
    }
    free(path);
    return node;
}

void wa__page_node(struct wa_ctx *x)
{
    json_t *answer, *node, *users, *data;
    uint64_t id;

    if (!wa__id_arg(x, &id))
        return;
    if ((node = wa__api_node(x, id, &answer)) &&
        (users = wa__api_list(x, "/api/v1/user", "users"))) {
        decorate(node);
        data = json_pack("{s:O, s:o}", "node", node, "users",
                         user_names(users, hs_json_str(json_object_get(node, "user"), "name")));
        wa__render(x, wa__page_status(x, data), "node", hs_json_str(node, "givenName"), data);
    }
    json_decref(answer);
}

/* One change of node args[0]: method on /api/v1/node/<id><suffix> with body (stolen), then
 * back to its page. */
static void node_change(struct wa_ctx *x, const char *method, const char *suffix, json_t *body,
                        const char *back)
{
    json_t *answer = NULL;
    uint64_t id;
    long status;
    char *path, *to;

    if (!wa__id_arg(x, &id)) {
        json_decref(body);
        return;
    }
    path = hs_aprintf("/api/v1/node/%" PRIu64 "%s", id, suffix);
    to = back ? hs_strdup(back) : hs_aprintf("/nodes/%" PRIu64, id);
    if (wa__api(x, method, path, body, &status, &answer) == 0)
        wa__after_change(x, status, answer, to, wa__page_node);
    json_decref(answer);
    free(path);
    free(to);
}

void wa__post_node_rename(struct wa_ctx *x)
{
    const char *name = wa__form_get(&x->form, "new_name");
    char *suffix = wa__path_join("/rename", name ? name : "");

    node_change(x, "POST", suffix, NULL, NULL);
    free(suffix);
}

void wa__post_node_expire(struct wa_ctx *x)
{
    node_change(x, "POST", "/expire", json_object(), NULL);
}

void wa__post_node_move(struct wa_ctx *x)
{
    const char *user = wa__form_get(&x->form, "user");

    node_change(x, "POST", "/user", json_pack("{s:s}", "user", user ? user : ""), NULL);
}

void wa__post_node_tags(struct wa_ctx *x)
{
    node_change(x, "POST", "/tags",
                json_pack("{s:o}", "tags", wa__form_words(&x->form, "tags")), NULL);
}

void wa__post_node_delete(struct wa_ctx *x)
{
    node_change(x, "DELETE", "", NULL, "/nodes");
}

/* GET live.json: {"online": count, "nodes": {id: online}} for webadmin.js, which refreshes the
 * online badges and counts of the page it runs on. */
void wa__live(struct wa_ctx *x)
{
    json_t *all = wa__api_list(x, "/api/v1/node", "nodes"), *states, *n, *out;
    size_t i, online = 0;
    char *text;

    if (!all)
        return;
    states = json_object();
    json_array_foreach(all, i, n) {
        bool on = json_is_true(json_object_get(n, "online"));
        const char *id = hs_json_str(n, "id");
        online += on;
        if (id)
            json_object_set_new(states, id, json_boolean(on));
    }
    out = json_pack("{s:I, s:o}", "online", (json_int_t)online, "nodes", states);
    text = hs_json_dump(out, JSON_COMPACT);
    hs_buf_reset(&x->rs->body);
    hs_buf_puts(&x->rs->body, text);
    x->rs->content_type = "application/json";
    free(text);
    json_decref(out);
    json_decref(all);
}
