/* headscale 0.22.3's paths: /api/v1/machine... and users by name. They run the 0.29 handlers,
 * which take an id or a name wherever 0.22 took a name, and answer in 0.22.3's shapes:
 * {"machine"}/{"machines"} holding its Machine, and its User {id, name, createdAt}. */
#include "api/api_internal.h"

#define V022(name, handler)                                                                  \
    void name(struct api_call *c)                                                            \
    {                                                                                        \
        c->v022 = true;                                                                      \
        handler(c);                                                                          \
    }

V022(api_machine_list, api_node_list)
V022(api_machine_get, api_node_get)
V022(api_machine_register, api_node_register)
V022(api_machine_expire, api_node_expire)
V022(api_machine_rename, api_node_rename)
V022(api_machine_tags, api_node_tags)
V022(api_machine_move, api_node_move)
V022(api_debug_create_machine, api_debug_create_node)
/* 0.29 has no GET /api/v1/user/{id}: this path is 0.22.3's alone. */
V022(api_user_get_v022, api_user_get)
