/* store: the DNS settings saved through the API, one row that is there or not. */
#include "store/store_internal.h"

int store_dns_get(struct store *st, char **text, int64_t *updated_at)
{
    return store__get_text(st, "SELECT data, updated_at FROM dns_settings WHERE id = 1", text,
                           updated_at);
}

int store_dns_set(struct store *st, const char *text, int64_t *updated_at)
{
    struct store_params p;
    int64_t now = hs_now_us();
    int rc;

    if (!text)
        return -EINVAL;
    store__params_init(&p);
    store__p_str(&p, text);
    store__p_i64(&p, now);
    rc = store__write_row(st,
                          "INSERT INTO dns_settings (id, data, updated_at) VALUES (1, $1, $2)"
                          " ON CONFLICT (id) DO UPDATE SET data = excluded.data,"
                          " updated_at = excluded.updated_at RETURNING id",
                          &p, NOTIFY_DNS, NOTIFY_UPDATE, NULL, NULL);
    if (rc == 0 && updated_at)
        *updated_at = now;
    return rc;
}

int store_dns_clear(struct store *st)
{
    return store__write_row(st, "DELETE FROM dns_settings WHERE id = 1 RETURNING id", NULL,
                            NOTIFY_DNS, NOTIFY_DELETE, NULL, NULL);
}
