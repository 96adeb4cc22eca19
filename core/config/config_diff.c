/* config: which settings differ between two loaded configurations. SIGHUP reads the file
 * again and compares it with the configuration in force, key by key of the key table. */
#include <string.h>

#include "config/config_internal.h"

static bool str_same(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool splits_equal(const struct hs_config *a, const struct hs_config *b)
{
    if (a->dns_nsplit != b->dns_nsplit)
        return false;
    for (size_t i = 0; i < a->dns_nsplit; i++)
        if (!str_same(a->dns_split[i].domain, b->dns_split[i].domain) ||
            !hs_strv_equal(&a->dns_split[i].nameservers, &b->dns_split[i].nameservers))
            return false;
    return true;
}

static bool records_equal(const struct hs_config *a, const struct hs_config *b)
{
    if (a->dns_nextra_records != b->dns_nextra_records)
        return false;
    for (size_t i = 0; i < a->dns_nextra_records; i++) {
        const struct dns_record *x = &a->dns_extra_records[i], *y = &b->dns_extra_records[i];
        if (!str_same(x->name, y->name) || !str_same(x->type, y->type) ||
            !str_same(x->value, y->value))
            return false;
    }
    return true;
}

static bool key_equal(const struct key_def *k, const struct hs_config *a,
                      const struct hs_config *b)
{
    switch (k->type) {
    case K_SPLIT:
        return splits_equal(a, b);
    case K_RECORDS:
        return records_equal(a, b);
    default:
        return config__field_equal(k, a, b);
    }
}

/* A field that an earlier row fills too (0.22.3's ip_prefixes, written into prefixes.v4 and
 * v6) is reported under that row's name only. */
static bool field_seen(size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (config__keys[j].type != K_NOFIELD && config__keys[j].off == config__keys[i].off)
            return true;
    return false;
}

void config_each_changed(const struct hs_config *a, const struct hs_config *b,
                         config_changed_fn fn, void *arg)
{
    for (size_t i = 0; i < config__nkeys; i++) {
        const struct key_def *k = &config__keys[i];

        if (k->type == K_NOFIELD || field_seen(i) || key_equal(k, a, b))
            continue;
        fn(arg, k->name);
    }
}
