/* Loading a policy document: text → JSON (HuJSON or YAML) → the checked sections of struct
 * policy. Everything that does not depend on the tailnet is checked here, so a document that
 * loads can only fail to compile on names (users) or on its own tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

static const char *const known_sections[] = {
    "acls", "groups", "hosts", "tagOwners", "autoApprovers", "ssh", "tests", "sshTests",
    "nodeAttrs", "grants", "randomizeClientPort",
};

static int check_sections(json_t *doc, char *err, size_t errsize)
{
    const char *key;
    json_t *val;

    if (!json_is_object(doc))
        return pol__err(err, errsize, "policy must be a JSON object");
    json_object_foreach(doc, key, val) {
        bool known = false;
        for (size_t i = 0; i < HS_ARRAY_LEN(known_sections) && !known; i++)
            known = strcmp(key, known_sections[i]) == 0;
        if (!known)
            return pol__err(err, errsize, "unknown field \"%s\"", key);
        if (json_is_null(val))
            continue;
        if ((strcmp(key, "acls") == 0 || strcmp(key, "ssh") == 0 ||
             strcmp(key, "grants") == 0 || strcmp(key, "tests") == 0 ||
             strcmp(key, "sshTests") == 0 || strcmp(key, "nodeAttrs") == 0) &&
            !json_is_array(val))
            return pol__err(err, errsize, "\"%s\" must be a list", key);
        if ((strcmp(key, "groups") == 0 || strcmp(key, "hosts") == 0 ||
             strcmp(key, "tagOwners") == 0 || strcmp(key, "autoApprovers") == 0) &&
            !json_is_object(val))
            return pol__err(err, errsize, "\"%s\" must be an object", key);
    }
    return 0;
}

/* A list of strings, or -EINVAL naming where. NULL and absent are an empty list. */
static int string_list(json_t *v, const char *where, char *err, size_t errsize)
{
    return pol__string_list(v) ? 0 : pol__err(err, errsize, "%s: must be a list of strings", where);
}

static bool tag_name_ok(const char *tag)
{
    const char *n = tag + strlen("tag:");

    if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z')))
        return false;
    for (; *n; n++) {
        if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') || (*n >= '0' && *n <= '9') ||
              *n == '-' || *n == '_' || *n == '.'))
            return false;
    }
    return true;
}

static int load_groups(struct policy *p, json_t *groups, char *err, size_t errsize)
{
    const char *name;
    json_t *members;
    int rc;

    p->groups = hs_xcalloc(json_object_size(groups) + 1, sizeof(*p->groups));
    json_object_foreach(groups, name, members) {
        struct pol_group *g = &p->groups[p->ngroups++];
        size_t i;
        json_t *m;
        g->name = hs_strdup(name);
        if (!hs_has_prefix(name, "group:") || !name[6])
            return pol__err(err, errsize, "groups: \"%s\": group names must start with 'group:'",
                            name);
        if ((rc = string_list(members, name, err, errsize)) < 0)
            return rc;
        g->members = hs_xcalloc(json_array_size(members) + 1, sizeof(*g->members));
        json_array_foreach(members, i, m) {
            const char *s = json_string_value(m);
            if (hs_has_prefix(s, "group:"))
                return pol__err(err, errsize,
                                "groups[\"%s\"]: \"%s\": group members cannot be recursive", name,
                                s);
            if (hs_has_prefix(s, "tag:") || hs_has_prefix(s, "autogroup:") || !*s ||
                strcmp(s, "*") == 0)
                return pol__err(err, errsize, "groups[\"%s\"]: \"%s\": members must be users",
                                name, s);
            g->members[g->n++] = (struct pol_alias){ .kind = PA_USER, .name = hs_strdup(s) };
        }
    }
    return 0;
}

static int load_hosts(struct policy *p, json_t *hosts, char *err, size_t errsize)
{
    const char *name;
    json_t *v;

    p->hosts = hs_xcalloc(json_object_size(hosts) + 1, sizeof(*p->hosts));
    json_object_foreach(hosts, name, v) {
        struct pol_host *h = &p->hosts[p->nhosts++];
        h->name = hs_strdup(name);
        if (!*name || strchr(name, '@') || strchr(name, ':'))
            return pol__err(err, errsize, "hosts: \"%s\": invalid host name", name);
        if (!json_is_string(v) || pol__parse_prefix(json_string_value(v), false, &h->ent) < 0)
            return pol__err(err, errsize, "hosts[\"%s\"]: not an IP address or prefix", name);
    }
    return 0;
}

/* Owners of a tag or an auto-approved route: users, groups, tags, autogroup:member/tagged. */
static int load_owners(const struct policy *p, json_t *list, const char *where,
                       struct pol_alias **out, size_t *n, char *err, size_t errsize)
{
    size_t i;
    json_t *m;
    int rc;

    if ((rc = string_list(list, where, err, errsize)) < 0)
        return rc;
    *out = hs_xcalloc(json_array_size(list) + 1, sizeof(**out));
    json_array_foreach(list, i, m) {
        struct pol_alias *a = &(*out)[*n];
        if ((rc = pol__parse_alias(p, json_string_value(m), a, err, errsize)) < 0)
            return rc;
        (*n)++;
        if (a->kind != PA_USER && a->kind != PA_GROUP && a->kind != PA_TAG &&
            a->kind != PA_MEMBER && a->kind != PA_TAGGED)
            return pol__err(err, errsize, "%s: \"%s\" cannot own tags or routes", where,
                            json_string_value(m));
    }
    return 0;
}

static int load_tag_owners(struct policy *p, json_t *owners, char *err, size_t errsize)
{
    const char *tag;
    json_t *v;
    int rc;

    /* Every tag first, so tags may own tags in any order. */
    p->tags = hs_xcalloc(json_object_size(owners) + 1, sizeof(*p->tags));
    json_object_foreach(owners, tag, v) {
        if (!hs_has_prefix(tag, "tag:") || !tag_name_ok(tag))
            return pol__err(err, errsize,
                            "tagOwners[\"%s\"]: tag names must start with a letter, after 'tag:'",
                            tag);
        p->tags[p->ntags++].tag = hs_strdup(tag);
    }
    for (size_t i = 0; i < p->ntags; i++) {
        char where[300];
        struct pol_tagowner *t = &p->tags[i];
        snprintf(where, sizeof(where), "tagOwners[\"%s\"]", t->tag);
        if ((rc = load_owners(p, json_object_get(owners, t->tag), where, &t->owners, &t->n, err,
                              errsize)) < 0)
            return rc;
    }
    return 0;
}

static int load_approvers(struct policy *p, json_t *aa, char *err, size_t errsize)
{
    json_t *routes = json_object_get(aa, "routes"), *exit = json_object_get(aa, "exitNode");
    const char *key, *cidr;
    json_t *v;
    int rc;

    json_object_foreach(aa, key, v) {
        if (strcmp(key, "routes") != 0 && strcmp(key, "exitNode") != 0)
            return pol__err(err, errsize, "autoApprovers: unknown field \"%s\"", key);
    }
    if (routes && !json_is_object(routes))
        return pol__err(err, errsize, "autoApprovers.routes must be an object");
    p->approvers = hs_xcalloc(json_object_size(routes) + 2, sizeof(*p->approvers));
    json_object_foreach(routes, cidr, v) {
        struct pol_approver *a = &p->approvers[p->napprovers++];
        char where[300];
        if (pol__parse_prefix(cidr, false, &a->route) < 0)
            return pol__err(err, errsize, "autoApprovers.routes: \"%s\" is not a prefix", cidr);
        snprintf(where, sizeof(where), "autoApprovers.routes[\"%s\"]", cidr);
        if ((rc = load_owners(p, v, where, &a->who, &a->n, err, errsize)) < 0)
            return rc;
    }
    if (exit && !json_is_null(exit)) {
        struct pol_approver *a = &p->approvers[p->napprovers++];
        a->exit = true;
        if ((rc = load_owners(p, exit, "autoApprovers.exitNode", &a->who, &a->n, err,
                              errsize)) < 0)
            return rc;
    }
    return 0;
}

static void rule_fini(struct pol_rule *r)
{
    for (size_t i = 0; i < r->nsrc; i++)
        pol__alias_fini(&r->src[i]);
    for (size_t i = 0; i < r->ndst; i++) {
        pol__alias_fini(&r->dst[i].a);
        free(r->dst[i].ports);
    }
    for (size_t i = 0; i < r->nips; i++)
        free(r->ips[i].ports);
    for (size_t i = 0; i < r->nvia; i++)
        free(r->via[i]);
    free(r->src);
    free(r->dst);
    free(r->ips);
    free(r->via);
}

void policy_free(struct policy *p)
{
    if (!p || __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < p->ngroups; i++) {
        for (size_t j = 0; j < p->groups[i].n; j++)
            pol__alias_fini(&p->groups[i].members[j]);
        free(p->groups[i].members);
        free(p->groups[i].name);
    }
    for (size_t i = 0; i < p->nhosts; i++)
        free(p->hosts[i].name);
    for (size_t i = 0; i < p->ntags; i++) {
        for (size_t j = 0; j < p->tags[i].n; j++)
            pol__alias_fini(&p->tags[i].owners[j]);
        free(p->tags[i].owners);
        free(p->tags[i].tag);
    }
    for (size_t i = 0; i < p->napprovers; i++) {
        for (size_t j = 0; j < p->approvers[i].n; j++)
            pol__alias_fini(&p->approvers[i].who[j]);
        free(p->approvers[i].who);
    }
    for (size_t i = 0; i < p->nrules; i++)
        rule_fini(&p->rules[i]);
    pol__ssh_free(p->ssh);
    pol__attrs_free(p->attrs);
    pol__tests_free(p->tests);
    free(p->groups);
    free(p->hosts);
    free(p->tags);
    free(p->approvers);
    free(p->rules);
    json_decref(p->doc);
    free(p);
}

static int load_doc(struct policy *p, char *err, size_t errsize)
{
    json_t *doc = p->doc, *v;
    int rc;

    if ((rc = check_sections(doc, err, errsize)) < 0)
        return rc;
    if ((v = json_object_get(doc, "groups")) && (rc = load_groups(p, v, err, errsize)) < 0)
        return rc;
    if ((v = json_object_get(doc, "hosts")) && (rc = load_hosts(p, v, err, errsize)) < 0)
        return rc;
    if ((v = json_object_get(doc, "tagOwners")) && (rc = load_tag_owners(p, v, err, errsize)) < 0)
        return rc;
    if ((v = json_object_get(doc, "autoApprovers")) &&
        (rc = load_approvers(p, v, err, errsize)) < 0)
        return rc;
    if ((rc = pol__load_rules(p, err, errsize)) < 0 || (rc = pol__load_ssh(p, err, errsize)) < 0 ||
        (rc = pol__load_attrs(p, err, errsize)) < 0)
        return rc;
    return pol__load_tests(p, err, errsize);
}

/* The first significant byte decides: a JSON document starts with '{' (after blanks and
 * comments); anything else is read as YAML. */
static enum policy_format sniff(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n')
            continue;
        if (text[i] == '/' && i + 1 < len && (text[i + 1] == '/' || text[i + 1] == '*'))
            return POLICY_FORMAT_HUJSON;
        return text[i] == '{' ? POLICY_FORMAT_HUJSON : POLICY_FORMAT_YAML;
    }
    return POLICY_FORMAT_HUJSON;
}

static json_t *parse_hujson(const char *text, size_t len, char *err, size_t errsize)
{
    char *std = hs_xmalloc(len + 1);
    json_t *doc = NULL;

    if (policy_hujson_standardize(text, len, std, err, errsize) == 0)
        doc = hs_json_load(std, len, POLICY_MAX_BYTES, err, errsize);
    free(std);
    return doc;
}

int policy_load(const char *text, size_t len, enum policy_format fmt, struct policy **out,
                char *err, size_t errsize)
{
    struct policy *p;
    json_t *doc;
    int rc;

    if (len > POLICY_MAX_BYTES) {
        snprintf(err, errsize, "policy of %zu bytes exceeds the limit of %u", len,
                 POLICY_MAX_BYTES);
        return -E2BIG;
    }
    if (fmt == POLICY_FORMAT_AUTO)
        fmt = sniff(text, len);
    doc = fmt == POLICY_FORMAT_YAML ? policy_yaml_to_json(text, len, err, errsize)
                                    : parse_hujson(text, len, err, errsize);
    if (!doc)
        return -EINVAL;
    p = hs_xcalloc(1, sizeof(*p));
    p->refs = 1;
    p->doc = doc;
    if ((rc = load_doc(p, err, errsize)) < 0) {
        policy_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

int policy_check(const char *text, size_t len, char *err, size_t errsize)
{
    struct policy *p;
    int rc = policy_load(text, len, POLICY_FORMAT_AUTO, &p, err, errsize);

    policy_free(p = rc == 0 ? p : NULL);
    return rc;
}

enum policy_format policy_format_for_path(const char *path)
{
    size_t n = path ? strlen(path) : 0;

    if ((n > 5 && strcmp(path + n - 5, ".yaml") == 0) ||
        (n > 4 && strcmp(path + n - 4, ".yml") == 0))
        return POLICY_FORMAT_YAML;
    return POLICY_FORMAT_HUJSON;
}
