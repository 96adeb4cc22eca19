/* Recompiling after a few nodes changed: what the change did not touch is carried over from
 * the previous net instead of computed again. Unchanged nodes share their data; a rule that
 * none of the changed nodes is (or was) part of keeps its SrcIPs and only has its bitsets
 * moved to the new node order; peer classes keep their sets and get one bit worked out per
 * changed node. What is left to do is proportional to the change, not to the tailnet. */
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

/* Where the nodes of the old net went: runs of consecutive old indexes that stay consecutive
 * in the new net (nodes are in id order in both, so a removal or an insertion splits a run). */
struct run {
    size_t from, to, len;
};

struct plan {
    struct run *runs;
    size_t nruns;
    size_t *fresh;      /* new indexes of nodes loaded from the topology (changed or new) */
    size_t nfresh;
    size_t *gone;       /* old indexes of nodes that changed or left */
    size_t ngone;
};

static bool is_changed(const uint64_t *changed, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (changed[mid] == id)
            return true;
        if (changed[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static void add_run(struct plan *pl, size_t from, size_t to)
{
    struct run *last = pl->nruns ? &pl->runs[pl->nruns - 1] : NULL;

    if (last && last->from + last->len == from && last->to + last->len == to) {
        last->len++;
        return;
    }
    pl->runs = hs_xrealloc(pl->runs, (pl->nruns + 1) * sizeof(*pl->runs));
    pl->runs[pl->nruns++] = (struct run){ from, to, 1 };
}

/* Merges the old nodes and the new topology by id (both sorted by id). */
static void plan_nodes(struct policy_net *c, const struct policy_net *old,
                       const struct policy_topology *t, const uint64_t *changed, size_t nch,
                       struct plan *pl)
{
    size_t i = 0;

    pl->fresh = hs_xcalloc(t->nnodes + 1, sizeof(*pl->fresh));
    pl->gone = hs_xcalloc(old->nnodes + 1, sizeof(*pl->gone));
    for (size_t j = 0; j < t->nnodes; j++) {
        uint64_t id = t->nodes[j].id;
        for (; i < old->nnodes && old->nodes[i].id < id; i++)
            pl->gone[pl->ngone++] = i;
        if (i < old->nnodes && old->nodes[i].id == id && !is_changed(changed, nch, id)) {
            c->nodes[j] = old->nodes[i];
            c->nodes[j].route_viewers = NULL;
            __atomic_add_fetch(c->nodes[j].shared, 1, __ATOMIC_ACQ_REL);
            add_run(pl, i++, j);
            continue;
        }
        if (i < old->nnodes && old->nodes[i].id == id)
            pl->gone[pl->ngone++] = i++;
        pol__load_node(c, j, &t->nodes[j]);
        pl->fresh[pl->nfresh++] = j;
    }
    for (; i < old->nnodes; i++)
        pl->gone[pl->ngone++] = i;
}

/* Copies len bits from src at bit from to dst at bit to (dst zeroed beforehand). */
static void copy_bits(uint64_t *dst, size_t to, const uint64_t *src, size_t from, size_t len)
{
    while (len > 0) {
        size_t sb = from % 64, db = to % 64;
        size_t n = 64 - (sb > db ? sb : db);
        uint64_t v;
        if (n > len)
            n = len;
        v = src[from / 64] >> sb;
        if (n < 64)
            v &= (UINT64_C(1) << n) - 1;
        dst[to / 64] |= v << db;
        from += n, to += n, len -= n;
    }
}

static uint64_t *remap(const struct policy_net *c, const struct plan *pl, const uint64_t *old)
{
    uint64_t *b = pol__bits_new(c);

    for (size_t k = 0; k < pl->nruns; k++)
        copy_bits(b, pl->runs[k].to, old, pl->runs[k].from, pl->runs[k].len);
    return b;
}

static bool has_star(const struct pol_rule *r)
{
    for (size_t k = 0; k < r->nsrc; k++) {
        if (r->src[k].kind == PA_STAR)
            return true;
    }
    for (size_t k = 0; k < r->ndst; k++) {
        if (r->dst[k].a.kind == PA_STAR)
            return true;
    }
    return false;
}

/* Whether a changed node is, or was, part of rule r: then the rule is resolved again. */
static bool touched(const struct policy_net *c, const struct policy_net *old,
                    const struct plan *pl, size_t r)
{
    const struct pol_crule *ocr = &old->rules[r];
    const struct pol_rule *rule = ocr->r;
    bool star = has_star(rule);

    for (size_t k = 0; k < pl->ngone; k++) {
        size_t i = pl->gone[k];
        if (pol__bit(ocr->src_nodes, i) || pol__bit(ocr->dst_nodes, i) ||
            (star && old->nodes[i].routes.n))
            return true;
    }
    for (size_t k = 0; k < pl->nfresh; k++) {
        size_t j = pl->fresh[k];
        if (star && c->nodes[j].routes.n)
            return true;
        for (size_t a = 0; a < rule->nsrc; a++) {
            if (pol__node_in_alias(c, &rule->src[a], j))
                return true;
        }
        for (size_t a = 0; a < rule->ndst; a++) {
            if (pol__dst_covers(c, rule, &rule->dst[a].a, j))
                return true;
        }
    }
    return false;
}

static void carry_rule(struct policy_net *c, const struct plan *pl, const struct pol_crule *o,
                       struct pol_crule *cr)
{
    *cr = *o;
    __atomic_add_fetch(cr->shared, 1, __ATOMIC_ACQ_REL);
    cr->src_nodes = remap(c, pl, o->src_nodes);
    cr->dst_nodes = remap(c, pl, o->dst_nodes);
    cr->dst_bits = hs_xcalloc(o->r->ndst + 1, sizeof(*cr->dst_bits));
    for (size_t k = 0; k < o->r->ndst; k++)
        cr->dst_bits[k] = remap(c, pl, o->dst_bits[k]);
}

/* The rules node j (changed) takes part in: only they can make a class see it. */
static size_t rules_of(const struct policy_net *c, size_t j, size_t *out)
{
    const struct pol_node *n = &c->nodes[j];
    size_t k = 0;

    for (size_t r = 0; r < c->nrules; r++) {
        const struct pol_crule *cr = &c->rules[r];
        if (pol__bit(cr->src_nodes, j) || pol__bit(cr->dst_nodes, j) ||
            (cr->self && !n->tagged && n->user != (size_t)-1))
            out[k++] = r;
    }
    return k;
}

/* Whether a member of class k sees node j (changed), through the rules j takes part in:
 * the class's side bits against j's (what rule_peers sets in a class's full set). */
static bool class_sees(const struct policy_net *c, size_t k, size_t j, const size_t *rules,
                       size_t nrules)
{
    const struct pol_node *n = &c->nodes[j];
    const uint64_t *sig = pol__class_sig(c, k);
    size_t user = c->classes[k].user;

    for (size_t x = 0; x < nrules; x++) {
        size_t r = rules[x];
        const struct pol_crule *cr = &c->rules[r];
        bool in_src = pol__bit(sig, 2 * r), in_dst = pol__bit(sig, 2 * r + 1);
        if ((in_src && pol__bit(cr->dst_nodes, j)) || (in_dst && pol__bit(cr->src_nodes, j)))
            return true;
        if (cr->self && user != (size_t)-1 && !n->tagged && n->user == user &&
            (in_src || pol__bit(cr->src_nodes, j)))
            return true;
    }
    return false;
}

static void carry_classes(struct policy_net *c, const struct policy_net *old,
                          const struct plan *pl)
{
    size_t *rules = hs_xcalloc(c->nrules + 1, sizeof(*rules));

    c->nclasses = c->cap_classes = old->nclasses;
    c->classes = hs_xcalloc(c->cap_classes + 1, sizeof(*c->classes));
    c->class_sigs = hs_xcalloc(c->cap_classes * c->sig_words + 1, sizeof(uint64_t));
    c->class_peers = hs_xcalloc(c->cap_classes * c->words + 1, sizeof(uint64_t));
    if (old->nclasses) { /* an empty tailnet has none, and no tables */
        memcpy(c->classes, old->classes, old->nclasses * sizeof(*c->classes));
        memcpy(c->class_sigs, old->class_sigs, old->nclasses * c->sig_words * sizeof(uint64_t));
    }
    for (size_t k = 0; k < c->nclasses; k++) {
        uint64_t *peers = pol__class_peers(c, k);
        c->classes[k].members = 0;
        for (size_t x = 0; x < pl->nruns; x++)
            copy_bits(peers, pl->runs[x].to, pol__class_peers(old, k), pl->runs[x].from,
                      pl->runs[x].len);
    }
    for (size_t f = 0; f < pl->nfresh; f++) {
        size_t j = pl->fresh[f], n = rules_of(c, j, rules);
        for (size_t k = 0; k < c->nclasses; k++) {
            if (class_sees(c, k, j, rules, n))
                pol__set(pol__class_peers(c, k), j);
        }
    }
    free(rules);
    c->cls = hs_xcalloc(c->nnodes + 1, sizeof(*c->cls));
    for (size_t x = 0; x < pl->nruns; x++) {
        for (size_t n = 0; n < pl->runs[x].len; n++)
            c->cls[pl->runs[x].to + n] = old->cls[pl->runs[x].from + n];
    }
    for (size_t f = 0; f < pl->nfresh; f++)
        c->cls[pl->fresh[f]] = pol__class_of(c, pl->fresh[f]);
    for (size_t i = 0; i < c->nnodes; i++)
        c->classes[c->cls[i]].members++;
}

/* Classes no node is in any more go, so a churning tailnet does not collect them. */
static void drop_empty_classes(struct policy_net *c)
{
    size_t *to = hs_xcalloc(c->nclasses + 1, sizeof(*to)), n = 0;

    for (size_t k = 0; k < c->nclasses; k++) {
        if (!c->classes[k].members)
            continue;
        to[k] = n;
        if (n != k) {
            c->classes[n] = c->classes[k];
            memcpy(pol__class_sig(c, n), pol__class_sig(c, k), c->sig_words * sizeof(uint64_t));
            memcpy(pol__class_peers(c, n), pol__class_peers(c, k), c->words * sizeof(uint64_t));
        }
        n++;
    }
    c->nclasses = n;
    for (size_t i = 0; i < c->nnodes; i++)
        c->cls[i] = to[c->cls[i]];
    free(to);
}

static bool same_users(const struct policy_net *old, const struct policy_topology *t)
{
    if (old->nusers != t->nusers)
        return false;
    for (size_t i = 0; i < t->nusers; i++) {
        const struct pol_user *u = &old->users[i];
        if (u->id != t->users[i].id || !hs_streq(u->name, t->users[i].name) ||
            !hs_streq(u->email, t->users[i].email))
            return false;
    }
    return true;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int policy_recompile(const struct policy_net *old, const struct policy_topology *t,
                     const uint64_t *changed, size_t nchanged, struct policy_net **out)
{
    struct policy_net *c;
    struct plan pl = { 0 };
    uint64_t *ids, *tmp;

    if (!changed || !old->p || !same_users(old, t))
        return pol__compile(old->p, t, false, out, NULL, 0);
    ids = hs_xcalloc(nchanged + 1, sizeof(*ids));
    memcpy(ids, changed, nchanged * sizeof(*ids));
    qsort(ids, nchanged, sizeof(*ids), cmp_u64);
    c = hs_xcalloc(1, sizeof(*c));
    c->p = old->p;
    __atomic_add_fetch(&((struct policy *)c->p)->refs, 1, __ATOMIC_ACQ_REL);
    pol__copy_users(c, t);
    c->nodes = hs_xcalloc(t->nnodes + 1, sizeof(*c->nodes));
    c->nnodes = t->nnodes;
    c->words = (t->nnodes + 63) / 64;
    plan_nodes(c, old, t, ids, nchanged, &pl);
    pol__index_nodes(c);
    tmp = pol__bits_new(c);
    c->rules = hs_xcalloc(old->nrules + 1, sizeof(*c->rules));
    for (size_t r = 0; r < old->nrules; r++, c->nrules++) {
        if (touched(c, old, &pl, r))
            pol__resolve_rule(c, old->rules[r].r, &c->rules[r], tmp);
        else
            carry_rule(c, &pl, &old->rules[r], &c->rules[r]);
    }
    c->self_rules = old->self_rules;
    c->sig_words = old->sig_words;
    carry_classes(c, old, &pl);
    drop_empty_classes(c);
    pol__mark_all(c);
    pol__route_viewers(c);
    free(tmp);
    free(ids);
    free(pl.runs);
    free(pl.fresh);
    free(pl.gone);
    *out = c;
    return 0;
}
