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

/* "&q=...&user=..." for the filters set. */
static void append_filters(struct hs_buf *b, const struct node_filter *f)
{
    const char *names[] = { "q", "user", "status", "sort" };
    const char *values[] = { f->q, f->user, f->status, f->sort };

    for (size_t i = 0; i < HS_ARRAY_LEN(names); i++) {
        if (!values[i] || !*values[i])
            continue;
        hs_buf_appendf(b, "&%s=", names[i]);
        tmpl_escape_url_component(b, values[i], strlen(values[i]));
    }
}

/* "?page=p&..." with the list's filters, for the pager's links. */
static char *page_query(const struct node_filter *f, uint64_t p)
{
    struct hs_buf b;

    hs_buf_init(&b, 1u << 16);
    hs_buf_appendf(&b, "?page=%" PRIu64, p);
    append_filters(&b, f);
    return hs_buf_steal(&b);
}

static void pager_link(json_t *j, const char *name, const struct node_filter *f, uint64_t p)
{
    char *q = page_query(f, p);

    json_object_set_new(j, name, json_string(q));
    free(q);
}

static json_t *pager(const struct node_filter *f, uint64_t page, uint64_t pages, uint64_t total)
{
    json_t *j = json_pack("{s:I, s:I, s:I}", "page", (json_int_t)page, "pages",
                          (json_int_t)pages, "total", (json_int_t)total);

    if (page > 1)
        pager_link(j, "prev", f, page - 1);
    if (page < pages)
        pager_link(j, "next", f, page + 1);
    return j;
}

json_t *wa__api_node_page(struct wa_ctx *x, const char *query)
{
    char *path = hs_aprintf("/api/v1/node/page?%s", query);
    json_t *answer = NULL;
    long status;

    if (wa__api(x, "GET", path, NULL, &status, &answer) == 0 &&
        (status != 200 || !json_is_array(json_object_get(answer, "nodes")))) {
        wa__error_page(x, status == 400 ? 400 : 502, wa__api_message(answer));
        json_decref(answer);
        answer = NULL;
    }
    free(path);
    return answer;
}

/* The users for a select, the one whose `field` is `value` marked selected. */
static json_t *mark_selected(json_t *users, const char *field, const char *value)
{
    size_t i;
    json_t *u;

    json_array_foreach(users, i, u)
        json_object_set_new(u, "selected", json_boolean(hs_streq(hs_json_str(u, field),
                                                                 value)));
    return users;
}

/* The list's page from the server (filtered, sorted and cut there): the list is never moved
 * whole, so a page costs the same at 50 nodes as at 5,000. */
void wa__page_nodes(struct wa_ctx *x)
{
    struct node_filter f = { wa__form_get(&x->query, "q"), wa__form_get(&x->query, "user"),
                             wa__form_get(&x->query, "status"),
                             wa__form_get(&x->query, "sort") };
    const char *pq = wa__form_get(&x->query, "page");
    uint64_t page = 1, pages, total;
    struct hs_buf q;
    json_t *answer, *users, *nodes, *n, *data;
    size_t i;

    if (pq && (hs_parse_u64(pq, NODES_MAX_PAGE, &page) < 0 || page == 0))
        page = 1;
    hs_buf_init(&q, 1u << 16);
    hs_buf_appendf(&q, "offset=%" PRIu64 "&limit=%d", (page - 1) * NODES_PER_PAGE,
                   NODES_PER_PAGE);
    append_filters(&q, &f);
    answer = wa__api_node_page(x, q.data);
    hs_buf_free(&q);
    if (!answer)
        return;
    if (!(users = wa__api_list(x, "/api/v1/user", "users"))) {
        json_decref(answer);
        return;
    }
    nodes = json_object_get(answer, "nodes");
    json_array_foreach(nodes, i, n)
        decorate(n);
    total = (uint64_t)json_integer_value(json_object_get(answer, "total"));
    pages = total ? (total + NODES_PER_PAGE - 1) / NODES_PER_PAGE : 1;
    data = json_pack("{s:O, s:o, s:o, s:s, s:b, s:b, s:b, s:b}", "nodes", nodes, "users",
                     mark_selected(users, "id", f.user), "pager",
                     pager(&f, page, pages, total), "q", f.q ? f.q : "", "status_online",
                     hs_streq(f.status, "online"), "status_offline",
                     hs_streq(f.status, "offline"), "status_expired",
                     hs_streq(f.status, "expired"), "sort_lastseen",
                     hs_streq(f.sort, "lastseen"));
    json_decref(answer);
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
    if ((node = wa__api_node(x, id, &answer)) && wa__node_reported(x, id, node) == 0 &&
        (users = wa__api_list(x, "/api/v1/user", "users"))) {
        decorate(node);
        data = json_pack("{s:O, s:o}", "node", node, "users",
                         mark_selected(users, "name",
                                       hs_json_str(json_object_get(node, "user"), "name")));
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

/* GET live.json: {"online": count, "nodes": {id: true}, "complete": bool} for webadmin.js,
 * which refreshes the online badges and counts of the page it runs on. Only online nodes are
 * asked for (at most a page of NODE_PAGE_MAX): when there are more, "complete" is false and the
 * badges of nodes not listed are left as they are. */
#define LIVE_MAX 500

void wa__live(struct wa_ctx *x)
{
    json_t *page = wa__api_node_page(x, "status=online&limit=" WA_STR(LIVE_MAX)), *states, *n;
    json_t *out;
    size_t i;
    char *text;

    if (!page)
        return;
    states = json_object();
    json_array_foreach(json_object_get(page, "nodes"), i, n)
        if (hs_json_str(n, "id"))
            json_object_set_new(states, hs_json_str(n, "id"), json_true());
    out = json_pack("{s:O, s:o, s:b}", "online", json_object_get(page, "online"), "nodes",
                    states, "complete",
                    json_integer_value(json_object_get(page, "online")) <= LIVE_MAX);
    text = hs_json_dump(out, JSON_COMPACT);
    hs_buf_reset(&x->rs->body);
    hs_buf_puts(&x->rs->body, text);
    x->rs->content_type = "application/json";
    free(text);
    json_decref(out);
    json_decref(page);
}
