/* The users page. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "webadmin/wa_internal.h"

json_t *wa__api_list(struct wa_ctx *x, const char *path, const char *key)
{
    long status;
    json_t *answer = NULL, *list;

    if (wa__api(x, "GET", path, NULL, &status, &answer) < 0)
        return NULL;
    if (status != 200) {
        wa__error_page(x, 502, wa__api_message(answer));
        json_decref(answer);
        return NULL;
    }
    list = json_object_get(answer, key);
    list = json_is_array(list) ? json_incref(list) : json_array();
    json_decref(answer);
    return list;
}

static void add_times(json_t *list, const char *field, const char *human)
{
    size_t i;
    json_t *el;
    char buf[40];

    json_array_foreach(list, i, el) {
        wa__human_time(hs_json_str(el, field), buf, sizeof(buf));
        json_object_set_new(el, human, json_string(buf));
    }
}

void wa__page_users(struct wa_ctx *x)
{
    json_t *users = wa__api_list(x, "/api/v1/user", "users"), *data;

    if (!users)
        return;
    add_times(users, "createdAt", "created");
    data = json_pack("{s:o}", "users", users);
    wa__render(x, wa__page_status(x, data), "users", "Users", data);
}

void wa__post_user_create(struct wa_ctx *x)
{
    const char *name = wa__form_get(&x->form, "name");
    json_t *answer = NULL;
    long status;

    if (wa__api(x, "POST", "/api/v1/user", json_pack("{s:s}", "name", name ? name : ""),
                &status, &answer) == 0)
        wa__after_change(x, status, answer, "/users", wa__page_users);
    json_decref(answer);
}

/* method on /api/v1/user/<args[0]><suffix>, then back to the list. */
static void user_change(struct wa_ctx *x, const char *method, const char *suffix)
{
    json_t *answer = NULL;
    uint64_t id;
    long status;
    char *path;

    if (!wa__id_arg(x, &id))
        return;
    path = hs_aprintf("/api/v1/user/%" PRIu64 "%s", id, suffix);
    if (wa__api(x, method, path, NULL, &status, &answer) == 0)
        wa__after_change(x, status, answer, "/users", wa__page_users);
    json_decref(answer);
    free(path);
}

void wa__post_user_rename(struct wa_ctx *x)
{
    const char *name = wa__form_get(&x->form, "new_name");
    char *suffix = wa__path_join("/rename", name ? name : "");

    user_change(x, "POST", suffix);
    free(suffix);
}

void wa__post_user_delete(struct wa_ctx *x)
{
    user_change(x, "DELETE", "");
}
