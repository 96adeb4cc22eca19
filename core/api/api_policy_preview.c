/* POST /api/v1/policy/preview (ours): who could reach whom under a draft policy, beside the
 * policy in force, for the tailnet's real nodes, and the draft's own tests one by one.
 * Nothing is stored or installed.
 *
 * "Reach" is node a may open a connection to node b on some port and protocol (directed).
 * Up to PREVIEW_NODE_ROWS nodes the matrix has a row and a column per node; past that, per
 * owner: a user's untagged nodes form one group, the nodes carrying one same set of tags
 * another, and when there are more than PREVIEW_MAX_GROUPS owners all but the
 * PREVIEW_MAX_GROUPS - 1 largest are folded into one last group, "others". A cell counts
 * the (source, destination) pairs that may connect, out of "pairs" (no node is paired with
 * itself). */
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "policy/policy.h"
#include "state/state.h"

#define PREVIEW_NODE_ROWS 32
#define PREVIEW_MAX_GROUPS 48

struct group {
    uint64_t id;      /* the node's, for "node" groups */
    const char *name; /* borrowed from the preview */
    const char *kind; /* "node", "user", "tags" or "others" */
    size_t nodes;
};

struct matrix {
    const char *grouping; /* "node" or "owner" */
    struct group *groups;
    size_t ngroups;
    size_t *group_of; /* per node */
    size_t folded;    /* owners folded into "others" */
};

/* ---- grouping ---- */

struct owner_key {
    const char *owner;
    bool tagged;
    size_t node;
};

static int by_owner(const void *a, const void *b)
{
    const struct owner_key *x = a, *y = b;

    if (x->tagged != y->tagged)
        return x->tagged ? 1 : -1; /* users first, then tag sets */
    return strcmp(x->owner, y->owner);
}

struct size_key {
    size_t nodes, group;
};

static int by_size(const void *a, const void *b)
{
    const struct size_key *x = a, *y = b;

    if (x->nodes != y->nodes)
        return x->nodes < y->nodes ? 1 : -1;
    return x->group < y->group ? -1 : x->group > y->group;
}

static void group_nodes(const struct state_preview *p, struct matrix *m)
{
    m->grouping = "node";
    for (size_t i = 0; i < p->n; i++) {
        m->groups[i] = (struct group){ .id = p->nodes[i].id, .name = p->nodes[i].name,
                                       .kind = "node", .nodes = 1 };
        m->group_of[i] = i;
    }
    m->ngroups = p->n;
}

static void group_owners(const struct state_preview *p, struct matrix *m)
{
    struct owner_key *keys = hs_xcalloc(p->n, sizeof(*keys));

    m->grouping = "owner";
    for (size_t i = 0; i < p->n; i++)
        keys[i] = (struct owner_key){ p->nodes[i].owner, p->nodes[i].tagged, i };
    qsort(keys, p->n, sizeof(*keys), by_owner);
    for (size_t k = 0; k < p->n; k++) {
        if (k == 0 || by_owner(&keys[k - 1], &keys[k]) != 0)
            m->groups[m->ngroups++] = (struct group){ .name = keys[k].owner,
                                                      .kind = keys[k].tagged ? "tags" : "user" };
        m->group_of[keys[k].node] = m->ngroups - 1;
        m->groups[m->ngroups - 1].nodes++;
    }
    free(keys);
}

/* The PREVIEW_MAX_GROUPS - 1 largest groups stay, in their order; the rest become one. */
static void fold_small(struct matrix *m, size_t nnodes)
{
    struct size_key *keys;
    size_t *to, kept = 0, others = 0;
    bool *keep;

    if (m->ngroups <= PREVIEW_MAX_GROUPS)
        return;
    keys = hs_xcalloc(m->ngroups, sizeof(*keys));
    keep = hs_xcalloc(m->ngroups, sizeof(*keep));
    to = hs_xcalloc(m->ngroups, sizeof(*to));
    for (size_t g = 0; g < m->ngroups; g++)
        keys[g] = (struct size_key){ m->groups[g].nodes, g };
    qsort(keys, m->ngroups, sizeof(*keys), by_size);
    for (size_t k = 0; k < PREVIEW_MAX_GROUPS - 1; k++)
        keep[keys[k].group] = true;
    for (size_t g = 0; g < m->ngroups; g++) {
        if (keep[g]) {
            to[g] = kept;
            m->groups[kept++] = m->groups[g];
        } else {
            to[g] = PREVIEW_MAX_GROUPS - 1;
            others += m->groups[g].nodes;
            m->folded++;
        }
    }
    m->groups[kept] = (struct group){ .name = "others", .kind = "others", .nodes = others };
    m->ngroups = kept + 1;
    for (size_t i = 0; i < nnodes; i++)
        m->group_of[i] = to[m->group_of[i]];
    free(keys);
    free(keep);
    free(to);
}

/* ---- counting ---- */

/* counts[g * ngroups + h]: pairs (a in g, b in h) where a may reach b under c. */
static size_t *count_reach(const struct policy_net *c, const struct matrix *m, size_t nnodes)
{
    size_t words = (nnodes + 63) / 64, *counts = hs_xcalloc(m->ngroups * m->ngroups + 1,
                                                            sizeof(*counts));
    uint64_t *row = hs_xcalloc(words + 1, sizeof(*row));

    for (size_t a = 0; a < nnodes; a++) {
        size_t *line = counts + m->group_of[a] * m->ngroups;
        policy_net_reach_row(c, a, row);
        for (size_t w = 0; w < words; w++) {
            for (uint64_t bits = row[w]; bits; bits &= bits - 1)
                line[m->group_of[w * 64 + (size_t)__builtin_ctzll(bits)]]++;
        }
    }
    free(row);
    return counts;
}

static json_t *square(const size_t *v, size_t n)
{
    json_t *rows = json_array();

    for (size_t g = 0; g < n; g++) {
        json_t *row = json_array();
        for (size_t h = 0; h < n; h++)
            json_array_append_new(row, json_integer((json_int_t)v[g * n + h]));
        json_array_append_new(rows, row);
    }
    return rows;
}

static json_t *matrix_json(const struct state_preview *p, const struct matrix *m)
{
    size_t *draft = count_reach(p->draft, m, p->n), *current = count_reach(p->current, m, p->n);
    size_t *pairs = hs_xcalloc(m->ngroups * m->ngroups + 1, sizeof(*pairs)), changed = 0;
    json_t *groups = json_array(), *j;

    for (size_t g = 0; g < m->ngroups; g++) {
        json_t *gj = json_pack("{s:s, s:s, s:I}", "name", m->groups[g].name, "kind",
                               m->groups[g].kind, "nodes", (json_int_t)m->groups[g].nodes);
        if (m->groups[g].id)
            json_object_set_new(gj, "id", api_json_id(m->groups[g].id));
        json_array_append_new(groups, gj);
        for (size_t h = 0; h < m->ngroups; h++) {
            size_t k = g * m->ngroups + h;
            pairs[k] = m->groups[g].nodes * m->groups[h].nodes - (g == h ? m->groups[g].nodes
                                                                         : 0);
            changed += draft[k] != current[k];
        }
    }
    j = json_pack("{s:s, s:I, s:o, s:o, s:o, s:o, s:I}", "grouping", m->grouping, "folded",
                  (json_int_t)m->folded, "groups", groups, "draft", square(draft, m->ngroups),
                  "current", square(current, m->ngroups), "pairs", square(pairs, m->ngroups),
                  "changed", (json_int_t)changed);
    free(draft);
    free(current);
    free(pairs);
    return j;
}

/* ---- tests ---- */

static void test_result(void *arg, size_t i, const char *src, const char *failure)
{
    json_t *r = json_pack("{s:s, s:b, s:s}", "src", src, "passed", failure == NULL, "message",
                          failure ? failure : "");

    json_object_set_new(r, "index", i == (size_t)-1 ? json_null() : json_integer((json_int_t)i));
    json_array_append_new(arg, r);
}

static json_t *tests_json(const struct policy_net *draft)
{
    json_t *results = json_array();
    size_t failed = policy_net_run_tests(draft, test_result, results);

    return json_pack("{s:b, s:I, s:o}", "passed", failed == 0, "failed", (json_int_t)failed,
                     "results", results);
}

/* ---- the handler ---- */

/* The draft of {"policy": "..."}: loaded (NULL for an empty text: no policy), or false
 * after replying 400 with the loader's message (it names the line and column). */
static bool draft_from_body(struct api_call *c, struct policy **out)
{
    json_t *body = api_body(c);
    const char *text = NULL;
    char err[1024];

    *out = NULL;
    if (!body || api_field_str(c, body, "policy", &text) < 0)
        return false;
    if (!text) {
        api_error(c, 400, "field \"policy\" is required");
        return false;
    }
    if (*text && policy_load(text, strlen(text), POLICY_FORMAT_AUTO, out, err, sizeof(err)) < 0) {
        api_error(c, 400, "invalid policy: %s", err);
        return false;
    }
    return true;
}

void api_policy_preview(struct api_call *c)
{
    struct state_preview p;
    struct policy *draft;
    struct matrix m = { 0 };
    char err[1024];
    json_t *j;

    if (!draft_from_body(c, &draft))
        return;
    if (state_policy_preview(c->api->state, draft, &p, err, sizeof(err)) < 0) {
        policy_free(draft);
        api_error(c, 400, "invalid policy: %s", err);
        return;
    }
    policy_free(draft); /* the compiled draft keeps its own reference */
    m.groups = hs_xcalloc(p.n + 1, sizeof(*m.groups));
    m.group_of = hs_xcalloc(p.n + 1, sizeof(*m.group_of));
    if (p.n <= PREVIEW_NODE_ROWS)
        group_nodes(&p, &m);
    else
        group_owners(&p, &m);
    fold_small(&m, p.n);
    j = json_pack("{s:I, s:o, s:o}", "nodes", (json_int_t)p.n, "matrix", matrix_json(&p, &m),
                  "tests", tests_json(p.draft));
    free(m.groups);
    free(m.group_of);
    state_preview_fini(&p);
    api_reply(c, 200, j);
}
