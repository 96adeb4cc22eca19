#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/server_internal.h"

#define LISTEN_BACKLOG 1024

int listen_tcp(const char *addr)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res, *ai;
    char host[256], port[16];
    int fd = -1, one = 1, rc;

    if (hs_split_host_port(addr, host, sizeof(host), port, sizeof(port)) < 0) {
        log_errorx("server: listen address \"%s\" is not host:port", addr);
        return -EINVAL;
    }
    if ((rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res)) != 0) {
        log_errorx("server: cannot resolve listen address \"%s\": %s", addr, gai_strerror(rc));
        return -EINVAL;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        /* Accepted sockets inherit it: DERP and map frames are small and must not wait for
         * Nagle. Non-blocking: the front door accepts until EAGAIN. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, LISTEN_BACKLOG) == 0)
            break;
        rc = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        errno = -rc;
        log_warn("server: cannot listen on %s", addr);
        return rc ? rc : -EADDRNOTAVAIL;
    }
    return fd;
}

/* A socket file left by a crashed server is removed; one that answers belongs to a live
 * server, and starting a second one on it would steal the CLI from the first. */
static int clear_stale_socket(const char *path, const struct sockaddr_un *sa)
{
    int fd, live;

    if (access(path, F_OK) < 0)
        return 0;
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -errno;
    live = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;
    close(fd);
    if (live) {
        log_errorx("server: %s is in use: is another headscale serve running?", path);
        return -EADDRINUSE;
    }
    unlink(path);
    return 0;
}

int listen_unix(const char *path, unsigned mode)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char *dir = hs_strdup(path), *slash = strrchr(dir, '/');
    int fd, rc;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        log_errorx("server: unix_socket path is too long: %s", path);
        free(dir);
        return -ENAMETOOLONG;
    }
    if (slash && slash != dir) {
        *slash = '\0';
        hs_mkdir_p(dir, 0755);
    }
    free(dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if ((rc = clear_stale_socket(path, &sa)) < 0)
        return rc;
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, mode) < 0 ||
        listen(fd, LISTEN_BACKLOG) < 0) {
        rc = -errno;
        log_warn("server: cannot listen on unix socket %s", path);
        close(fd);
        unlink(path);
        return rc;
    }
    return fd;
}
