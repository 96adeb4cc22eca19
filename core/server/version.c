/* What this binary is, as /version and `headscale version` report it. */
#include <stdlib.h>
#include <sys/utsname.h>

#include "server/server.h"
#include "util/util.h"

/* build_info.c, generated at build time by cmake/build_info.cmake. */
extern const char server_build_commit[];
extern const char server_build_time[];
extern const bool server_build_dirty;

static const char *compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "cc";
#endif
}

json_t *server_version_json(void)
{
    struct utsname u;

    if (uname(&u) < 0)
        u = (struct utsname){ .sysname = "unknown", .machine = "unknown" };
    return json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s}, s:b, s:{s:s, s:s, s:s}}", "version",
                     SERVER_VERSION, "commit", server_build_commit, "buildTime",
                     server_build_time, "compiler", "version", compiler(), "os", u.sysname,
                     "arch", u.machine, "dirty", server_build_dirty, "implementation", "name",
                     SERVER_NAME, "version", HS_VERSION, "headscaleApi", SERVER_HEADSCALE_API);
}

char *server_version_text(void)
{
    json_t *j = server_version_json();
    const json_t *c = json_object_get(j, "compiler");
    char *text = hs_aprintf("headscale version %s%s\ncommit: %s\nbuild time: %s\nbuilt with: %s %s/%s",
                            SERVER_VERSION, server_build_dirty ? "-dirty" : "",
                            server_build_commit, server_build_time, hs_json_str(c, "version"),
                            hs_json_str(c, "os"), hs_json_str(c, "arch"));

    json_decref(j);
    return text;
}
