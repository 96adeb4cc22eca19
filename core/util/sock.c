#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/util.h"

ssize_t hs_write_nonblock(int fd, const void *data, size_t len)
{
    const char *p = data;
    size_t off = 0;

    while (off < len) {
        ssize_t n = write(fd, p + off, len - off);
        if (n > 0)
            off += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        else
            return n < 0 ? -errno : -EPIPE;
    }
    return (ssize_t)off;
}

int hs_split_host_port(const char *addr, char *host, size_t hostsize, char *port,
                       size_t portsize)
{
    const char *colon;

    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':' || (size_t)(end - addr) >= hostsize)
            return -EINVAL;
        snprintf(host, hostsize, "%.*s", (int)(end - addr - 1), addr + 1);
        colon = end + 1;
    } else {
        if (!(colon = strrchr(addr, ':')) || (size_t)(colon - addr) >= hostsize)
            return -EINVAL;
        snprintf(host, hostsize, "%.*s", (int)(colon - addr), addr);
    }
    if (!colon[1] || strlen(colon + 1) >= portsize)
        return -EINVAL;
    snprintf(port, portsize, "%s", colon + 1);
    return 0;
}
