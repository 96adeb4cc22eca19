/* Recompiling after a few nodes changed: what the change did not touch is carried over from
 * the previous net instead of computed again, and shared rather than copied where it can be.
 *
 * - Nodes: the blocks no changed node is in are shared (one reference each); a block with
 *   one is copied, the changed node loaded again in it. Users and their indexes are shared.
 * - Indexes (each user's nodes, nodes by tag, routers): old's, patched.
 * - Rules: one that none of the changed nodes is (or was) part of keeps its SrcIPs; its
 *   bitsets are shared when no node moved to another index (a node changed in place, or
 *   added or removed at the end), else moved to the new order.
 * - Peer classes keep their sets and get one bit worked out per changed node; a class whose
 *   set that leaves as it was is shared.
 * - Route viewers: carried for every route the change cannot concern.
 *
 * What is left is proportional to the change and to the number of blocks, classes and
 * rules, not to the nodes (a few tables of one word per node are copied). */
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

/* ---- where the nodes go ---- */

/* The index of the node with this id in old, or SIZE_MAX (nodes are in id order). */
static size_t old_index(const struct policy_net *old, uint64_t id)
{
    size_t lo = 0, hi = old->nnodes;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (old->ids[mid] == id)
            return mid;
        if (old->ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

static size_t new_index(const struct policy_topology *t, uint64_t id)
{
    size_t lo = 0, hi = t->nnodes;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->nodes[mid].id == id)
            return mid;
        if (t->nodes[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

static void add_run(struct pol_plan *pl, size_t from, size_t to, size_t len)
{
    pl->runs = hs_xrealloc(pl->runs, (pl->nruns + 1) * sizeof(*pl->runs));
    pl->runs[pl->nruns++] = (struct pol_run){ from, to, len };
}

/* The runs between the gone and the fresh nodes; false if the topology is not old with the
 * changes (a node added or removed but not named): the caller then compiles in full. */
static bool plan_runs(struct pol_plan *pl, const struct policy_net *old,
                      const struct policy_topology *t)
{
    size_t i = 0, j = 0, g = 0, f = 0;

    if (t->nnodes != old->nnodes - pl->ngone + pl->nfresh)
        return false;
    for (size_t k = 0; k < pl->nfresh; k++) { /* in id order with its neighbours */
        size_t x = pl->fresh[k];
        if ((x > 0 && t->nodes[x - 1].id >= t->nodes[x].id) ||
            (x + 1 < t->nnodes && t->nodes[x].id >= t->nodes[x + 1].id))
            return false;
    }
    while (i < old->nnodes || j < t->nnodes) {
        size_t len;
        if (g < pl->ngone && pl->gone[g] == i) {
            i++, g++;
            continue;
        }
        if (f < pl->nfresh && pl->fresh[f] == j) {
            j++, f++;
            continue;
        }
        len = (g < pl->ngone ? pl->gone[g] : old->nnodes) - i;
        if (f < pl->nfresh && pl->fresh[f] - j < len)
            len = pl->fresh[f] - j;
        if (len == 0 || len > t->nnodes - j)
            return false;
        for (size_t k = 0; k < len; k++) {
            if (old->ids[i + k] != t->nodes[j + k].id)
                return false;
        }
        add_run(pl, i, j, len);
        i += len, j += len;
    }
    return true;
}

/* Which old nodes went, which new ones are fresh, and where the others moved. */
static bool plan_nodes(struct pol_plan *pl, const struct policy_net *old,
                       const struct policy_topology *t, const uint64_t *ids, size_t n)
{
    pl->gone = hs_xcalloc(n + 1, sizeof(*pl->gone));
    pl->fresh = hs_xcalloc(n + 1, sizeof(*pl->fresh));
    for (size_t k = 0; k < n; k++) {
        size_t i, j;
        if (k && ids[k] == ids[k - 1])
            continue;
        i = old_index(old, ids[k]);
        j = new_index(t, ids[k]);
        if (i != SIZE_MAX)
            pl->gone[pl->ngone++] = i;
        if (j != SIZE_MAX)
            pl->fresh[pl->nfresh++] = j;
    }
    if (!plan_runs(pl, old, t))
        return false;
    pl->map = hs_xcalloc(old->nnodes + 1, sizeof(*pl->map));
    for (size_t g = 0; g < pl->ngone; g++)
        pl->map[pl->gone[g]] = SIZE_MAX;
    pl->aligned = true;
    for (size_t r = 0; r < pl->nruns; r++) {
        const struct pol_run *run = &pl->runs[r];
        for (size_t k = 0; k < run->len; k++)
            pl->map[run->from + k] = run->to + k;
        pl->aligned &= run->from == run->to;
    }
    return true;
}

static void plan_free(struct pol_plan *pl)
{
    free(pl->runs);
    free(pl->map);
    free(pl->fresh);
    free(pl->gone);
}

/* Bitsets keep old's size while the nodes fit (and it is not far too large): then a
 * bitset the change did not touch can be shared. */
static size_t words_after(const struct policy_net *old, size_t nnodes)
{
    size_t need = (nnodes + 63) / 64;

    if (need <= old->words && old->words <= 2 * pol__words_for(nnodes))
        return old->words;
    return pol__words_for(nnodes);
}

/* ---- node blocks ---- */

static void push_block(struct policy_net *c, struct pol_nblock *b)
{
    c->blocks = hs_xrealloc(c->blocks, (c->nblocks + 1) * sizeof(*c->blocks));
    c->blocks[c->nblocks++] = b;
}

/* A block grown past twice the usual size is cut in blocks of the usual size (the records
 * move, their references with them). */
static void push_split(struct policy_net *c, struct pol_nblock *b)
{
    if (b->n <= 2 * POL_BLOCK) {
        push_block(c, b);
        return;
    }
    for (size_t first = 0; first < b->n; first += POL_BLOCK) {
        size_t n = b->n - first < POL_BLOCK ? b->n - first : POL_BLOCK;
        struct pol_nblock *part = pol__block_new(n);
        memcpy(part->v, &b->v[first], n * sizeof(b->v[0]));
        push_block(c, part);
    }
    free(b);
}

/* Block ob of old (its first node old index s) without its gone nodes and with the fresh
 * nodes fresh[f..fend), merged in id order; records kept are copies of old's. */
static void copy_block(struct policy_net *c, const struct pol_nblock *ob, size_t s,
                       const struct policy_topology *t, const struct pol_plan *pl, size_t g,
                       size_t gend, size_t f, size_t fend)
{
    struct pol_nblock *b = pol__block_new(ob->n - (gend - g) + (fend - f));
    size_t k = 0, n = 0;

    while (k < ob->n || f < fend) {
        if (k < ob->n && g < gend && pl->gone[g] == s + k) {
            k++, g++;
        } else if (f < fend && (k == ob->n || t->nodes[pl->fresh[f]].id < ob->v[k].id)) {
            pol__load_node(c, &b->v[n++], &t->nodes[pl->fresh[f++]]);
        } else {
            pol__node_copy(&b->v[n++], &ob->v[k++]);
        }
    }
    if (n)
        push_split(c, b);
    else
        free(b);
}

/* Each fresh node goes to the block of the nodes around it: the first whose next block
 * starts past its id. A block with no gone or fresh node is shared. */
static void plan_blocks(struct policy_net *c, const struct policy_net *old,
                        const struct policy_topology *t, const struct pol_plan *pl)
{
    size_t s = 0, g = 0, f = 0;

    for (size_t b = 0; b < old->nblocks; b++) {
        const struct pol_nblock *ob = old->blocks[b];
        uint64_t next = b + 1 < old->nblocks ? old->blocks[b + 1]->v[0].id : UINT64_MAX;
        size_t gend = g, fend = f;
        while (gend < pl->ngone && pl->gone[gend] < s + ob->n)
            gend++;
        while (fend < pl->nfresh && t->nodes[pl->fresh[fend]].id < next)
            fend++;
        if (gend == g && fend == f) {
            __atomic_add_fetch(&old->blocks[b]->refs, 1, __ATOMIC_ACQ_REL);
            push_block(c, old->blocks[b]);
        } else {
            copy_block(c, ob, s, t, pl, g, gend, f, fend);
        }
        s += ob->n, g = gend, f = fend;
    }
    if (f < pl->nfresh) { /* old had no nodes (or a node has the largest id there is) */
        struct pol_nblock none = { .n = 0 };
        copy_block(c, &none, 0, t, pl, 0, 0, f, pl->nfresh);
    }
}

/* ---- rules ---- */

/* Copies len bits from src at bit from to dst at bit to (dst zeroed beforehand): bit by bit
 * to a word boundary of dst, then a word at a time. */
static void copy_bits(uint64_t *dst, size_t to, const uint64_t *src, size_t from, size_t len)
{
    size_t sh;

    for (; len && to % 64; len--, from++, to++) {
        if (pol__bit(src, from))
            pol__set(dst, to);
    }
    sh = from % 64;
    for (; len >= 64; len -= 64, from += 64, to += 64) {
        const uint64_t *w = &src[from / 64];
        dst[to / 64] = sh ? w[0] >> sh | w[1] << (64 - sh) : w[0];
    }
    for (; len; len--, from++, to++) {
        if (pol__bit(src, from))
            pol__set(dst, to);
    }
}

uint64_t *pol__remap_bits(const struct policy_net *c, const struct pol_plan *pl,
                          const uint64_t *old)
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
                    const struct pol_plan *pl, size_t r)
{
    const struct pol_crule *ocr = &old->rules[r];
    const struct pol_rule *rule = ocr->r;
    bool star = has_star(rule);

    for (size_t k = 0; k < pl->ngone; k++) {
        size_t i = pl->gone[k];
        if (pol__bit(ocr->src_nodes, i) || pol__bit(ocr->dst_nodes, i) ||
            (star && old->nodes[i]->routes.n))
            return true;
    }
    for (size_t k = 0; k < pl->nfresh; k++) {
        size_t j = pl->fresh[k];
        if (star && c->nodes[j]->routes.n)
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

/* An untouched rule has no changed node in its bitsets, before or after: when the others
 * kept their indexes they are the same bits. */
static void carry_rule(struct policy_net *c, const struct pol_plan *pl,
                       const struct pol_crule *o, struct pol_crule *cr)
{
    *cr = *o;
    __atomic_add_fetch(cr->shared, 1, __ATOMIC_ACQ_REL);
    if (pl->aligned) {
        __atomic_add_fetch(cr->bits_shared, 1, __ATOMIC_ACQ_REL);
        return;
    }
    cr->bits_shared = hs_xcalloc(1, sizeof(*cr->bits_shared));
    *cr->bits_shared = 1;
    cr->src_nodes = pol__remap_bits(c, pl, o->src_nodes);
    cr->dst_nodes = pol__remap_bits(c, pl, o->dst_nodes);
    cr->dst_bits = hs_xcalloc(o->r->ndst + 1, sizeof(*cr->dst_bits));
    for (size_t k = 0; k < o->r->ndst; k++)
        cr->dst_bits[k] = pol__remap_bits(c, pl, o->dst_bits[k]);
}

/* ---- peer classes ---- */

/* What makes a class see fresh node j, in terms of class signatures (what rule_peers sets in
 * a class's full set): a class in rule r's sources sees j if j is in its destinations
 * (sig bit 2r), one in its destinations if j is in its sources (2r+1); and with
 * autogroup:self, a class of j's user (untagged j) if it or j is in the rule's sources. */
struct seen_by {
    uint64_t *sig;      /* sig_words: the bits above */
    uint64_t *self_sig; /* sig_words: bit 2r for each self rule r */
    bool self_any;      /* j is in a self rule's sources */
    size_t user;        /* j's user; (size_t)-1 when tagged or none */
};

static void seen_by_init(const struct policy_net *c, size_t j, struct seen_by *s)
{
    const struct pol_node *n = c->nodes[j];

    s->sig = hs_xcalloc(2 * c->sig_words + 1, sizeof(uint64_t));
    s->self_sig = s->sig + c->sig_words;
    s->self_any = false;
    s->user = !n->tagged ? n->user : (size_t)-1;
    for (size_t r = 0; r < c->nrules; r++) {
        const struct pol_crule *cr = &c->rules[r];
        bool in_src = pol__bit(cr->src_nodes, j);
        if (pol__bit(cr->dst_nodes, j))
            pol__set(s->sig, 2 * r);
        if (in_src)
            pol__set(s->sig, 2 * r + 1);
        if (cr->self && s->user != (size_t)-1) {
            pol__set(s->self_sig, 2 * r);
            s->self_any |= in_src;
        }
    }
}

static bool class_sees(const struct policy_net *c, const struct pol_class *cl,
                       const struct seen_by *s)
{
    bool mine = cl->user != (size_t)-1 && cl->user == s->user;

    for (size_t w = 0; w < c->sig_words; w++) {
        if (cl->bits[w] & s->sig[w])
            return true;
    }
    if (!mine || s->self_any)
        return mine;
    for (size_t w = 0; w < c->sig_words; w++) {
        if (cl->bits[w] & s->self_sig[w])
            return true;
    }
    return false;
}

static struct seen_by *seen_by_fresh(const struct policy_net *c, const struct pol_plan *pl)
{
    struct seen_by *s = hs_xcalloc(pl->nfresh + 1, sizeof(*s));

    for (size_t f = 0; f < pl->nfresh; f++)
        seen_by_init(c, pl->fresh[f], &s[f]);
    return s;
}

/* Whether class ocl's peers change: a fresh node it now sees or no longer sees at the same
 * index, or a gone node past the new end (aligned plans only). */
static bool class_changes(const struct policy_net *c, const struct pol_plan *pl,
                          const struct pol_class *ocl, const struct seen_by *s)
{
    const uint64_t *peers = ocl->bits + c->sig_words;

    for (size_t f = 0; f < pl->nfresh; f++) {
        if (pol__bit(peers, pl->fresh[f]) != class_sees(c, ocl, &s[f]))
            return true;
    }
    for (size_t g = 0; g < pl->ngone; g++) {
        if (pl->gone[g] >= c->nnodes && pol__bit(peers, pl->gone[g]))
            return true;
    }
    return false;
}

/* Class ocl for c: its peers carried through pl and the fresh nodes' bits worked out. */
static struct pol_class *class_copy(const struct policy_net *c, const struct policy_net *old,
                                    const struct pol_plan *pl, const struct pol_class *ocl,
                                    const struct seen_by *s)
{
    struct pol_class *cl = hs_xcalloc(1, sizeof(*cl) + (c->sig_words + c->words + 1) *
                                                          sizeof(uint64_t));
    const uint64_t *opeers = ocl->bits + old->sig_words;
    uint64_t *peers = cl->bits + c->sig_words;

    *cl = (struct pol_class){ .refs = 1, .hash = ocl->hash, .user = ocl->user,
                              .npeers = ocl->npeers };
    memcpy(cl->bits, ocl->bits, c->sig_words * sizeof(uint64_t));
    for (size_t x = 0; x < pl->nruns; x++)
        copy_bits(peers, pl->runs[x].to, opeers, pl->runs[x].from, pl->runs[x].len);
    for (size_t g = 0; g < pl->ngone; g++)
        cl->npeers -= pol__bit(opeers, pl->gone[g]);
    for (size_t f = 0; f < pl->nfresh; f++) {
        if (class_sees(c, cl, &s[f])) {
            pol__set(peers, pl->fresh[f]);
            cl->npeers++;
        }
    }
    return cl;
}

static void carry_classes(struct policy_net *c, const struct policy_net *old,
                          const struct pol_plan *pl)
{
    struct seen_by *s = seen_by_fresh(c, pl);

    c->nclasses = c->cap_classes = old->nclasses;
    c->classes = hs_xcalloc(c->cap_classes + 1, sizeof(*c->classes));
    c->members = hs_xcalloc(c->cap_classes + 1, sizeof(*c->members));
    for (size_t k = 0; k < c->nclasses; k++) {
        struct pol_class *ocl = old->classes[k];
        c->members[k] = old->members[k];
        if (pl->aligned && !class_changes(c, pl, ocl, s)) {
            __atomic_add_fetch(&ocl->refs, 1, __ATOMIC_ACQ_REL);
            c->classes[k] = ocl;
        } else {
            c->classes[k] = class_copy(c, old, pl, ocl, s);
        }
    }
    for (size_t f = 0; f < pl->nfresh; f++)
        free(s[f].sig);
    free(s);
    c->cls = hs_xcalloc(c->nnodes + 1, sizeof(*c->cls));
    for (size_t x = 0; x < pl->nruns; x++)
        memcpy(&c->cls[pl->runs[x].to], &old->cls[pl->runs[x].from],
               pl->runs[x].len * sizeof(*c->cls));
    for (size_t g = 0; g < pl->ngone; g++)
        c->members[old->cls[pl->gone[g]]]--;
    for (size_t f = 0; f < pl->nfresh; f++) {
        size_t j = pl->fresh[f];
        c->cls[j] = pol__class_of(c, j);
        c->members[c->cls[j]]++;
    }
}

/* Classes no node is in any more go (the last one takes the place of each), so a churning
 * tailnet does not collect them. */
static void drop_empty_classes(struct policy_net *c)
{
    for (size_t k = c->nclasses; k-- > 0;) {
        size_t last = c->nclasses - 1;
        if (c->members[k])
            continue;
        pol__class_unref(c->classes[k]);
        c->classes[k] = c->classes[last];
        c->members[k] = c->members[last];
        for (size_t i = 0; k != last && i < c->nnodes; i++) {
            if (c->cls[i] == last)
                c->cls[i] = k;
        }
        c->nclasses--;
    }
}

/* ---- the recompile ---- */

static bool same_users(const struct policy_net *old, const struct policy_topology *t)
{
    if (old->nusers != t->nusers)
        return false;
    for (size_t i = 0; i < t->nusers; i++) {
        const struct pol_user *u = &old->users[i];
        if (u->id != t->users[i].id || !hs_streq(u->name, t->users[i].name) ||
            !hs_streq(u->email, t->users[i].email) || u->groups.n != t->users[i].ngroups)
            return false;
        for (size_t g = 0; g < u->groups.n; g++) {
            if (strcmp(u->groups.v[g], t->users[i].groups[g]) != 0)
                return false;
        }
    }
    return true;
}

/* The rules: resolved again where the change touched them (redone), carried elsewhere. */
static void carry_rules(struct policy_net *c, const struct policy_net *old,
                        const struct pol_plan *pl, bool *redone)
{
    uint64_t *tmp = pol__bits_new(c);

    c->rules = hs_xcalloc(old->nrules + 1, sizeof(*c->rules));
    for (size_t r = 0; r < old->nrules; r++, c->nrules++) {
        redone[r] = touched(c, old, pl, r);
        if (redone[r])
            pol__resolve_rule(c, old->rules[r].r, &c->rules[r], tmp);
        else
            carry_rule(c, pl, &old->rules[r], &c->rules[r]);
    }
    free(tmp);
}

static struct policy_net *recompile(const struct policy_net *old,
                                    const struct policy_topology *t, struct pol_plan *pl)
{
    struct policy_net *c = hs_xcalloc(1, sizeof(*c));
    bool *redone = hs_xcalloc(old->nrules + 1, sizeof(*redone));

    c->p = old->p;
    __atomic_add_fetch(&((struct policy *)c->p)->refs, 1, __ATOMIC_ACQ_REL);
    c->server_url = hs_strdup(t->server_url);
    c->elected = t->elected;
    pol__share_users(c, old);
    c->nnodes = t->nnodes;
    c->words = words_after(old, t->nnodes);
    pl->aligned &= c->words == old->words;
    plan_blocks(c, old, t, pl);
    pol__node_table(c);
    c->ids = hs_xcalloc(c->nnodes + 1, sizeof(*c->ids));
    for (size_t x = 0; x < pl->nruns; x++)
        memcpy(&c->ids[pl->runs[x].to], &old->ids[pl->runs[x].from],
               pl->runs[x].len * sizeof(*c->ids));
    for (size_t f = 0; f < pl->nfresh; f++)
        c->ids[pl->fresh[f]] = t->nodes[pl->fresh[f]].id;
    pol__patch_indexes(c, old, pl);
    carry_rules(c, old, pl, redone);
    c->self_rules = old->self_rules;
    c->sig_words = old->sig_words;
    carry_classes(c, old, pl);
    drop_empty_classes(c);
    pol__carry_route_viewers(c, old, pl, redone);
    free(redone);
    return c;
}

int policy_recompile(const struct policy_net *old, const struct policy_topology *t,
                     const uint64_t *changed, size_t nchanged, struct policy_net **out)
{
    struct pol_plan pl = { 0 };
    uint64_t *ids;
    bool ok;

    if (!changed || !old->p || !same_users(old, t))
        return pol__compile(old->p, t, false, out, NULL, 0);
    ids = hs_xcalloc(nchanged + 1, sizeof(*ids));
    memcpy(ids, changed, nchanged * sizeof(*ids));
    qsort(ids, nchanged, sizeof(*ids), hs_u64_cmp);
    ok = plan_nodes(&pl, old, t, ids, nchanged);
    free(ids);
    if (ok)
        *out = recompile(old, t, &pl);
    plan_free(&pl);
    return ok ? 0 : pol__compile(old->p, t, false, out, NULL, 0);
}
