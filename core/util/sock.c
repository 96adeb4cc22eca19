#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
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

void hs_keepalive_for(int64_t timeout_us, struct hs_keepalive *k)
{
    int64_t ms = timeout_us / 1000;

    if (ms < 1000)
        ms = 1000;
    if (ms > INT32_MAX)
        ms = INT32_MAX;
    k->user_timeout_ms = (unsigned)ms;
    k->idle_s = ms / 3000 > 1 ? (int)(ms / 3000) : 1;
    k->interval_s = ms / 6000 > 1 ? (int)(ms / 6000) : 1;
    k->count = 4; /* idle + 4 intervals: the whole timeout */
}

int hs_keepalive_set(int fd, const struct hs_keepalive *k)
{
    int one = 1;

    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &k->idle_s, sizeof(k->idle_s)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &k->interval_s, sizeof(k->interval_s)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &k->count, sizeof(k->count)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &k->user_timeout_ms,
                   sizeof(k->user_timeout_ms)) < 0)
        return -errno;
    return 0;
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
