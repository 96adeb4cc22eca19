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
 * server, and starting a second one on it would steal the CLI from the first. Anything else
 * at the path (a file, a symlink) is not ours to delete. */
static int clear_stale_socket(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;
    int fd, live;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode)) {
        log_errorx("server: unix_socket %s exists and is not a socket: not removing it", path);
        return -EEXIST;
    }
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

/* Whoever can write a directory on the socket's path can put their own socket there and answer
 * the CLI (which trusts the socket with full admin rights, and shows what it answers). The
 * default /var/run/headscale (root's, or the service user's through systemd) passes; a group
 * that may write is only warned about, its members usually being the admins. */
static int check_socket_place(const char *path)
{
    char why[1024];
    int v = hs_path_trust(path, HS_PATH_STRICT_OWNER, why, sizeof(why));

    if (v == HS_PATH_UNSAFE) {
        log_errorx("server: refusing unix_socket %s: %s: another user could replace the "
                   "socket and answer the CLI; give the directory to root (or to this user) "
                   "with mode 0755, or choose another unix_socket", path, why);
        return -EPERM;
    }
    if (v == HS_PATH_GROUP_WRITABLE)
        log_warnx("server: unix_socket %s: %s: its members could replace the socket and answer "
                  "the CLI", path, why);
    else if (v < 0)
        log_warnx("server: unix_socket %s: cannot examine its directories: %s", path,
                  hs_strerror(v));
    return 0;
}

/* The socket is created with its final mode (umask around bind): a chmod by path afterwards
 * would follow whatever sits at the path by then. Other threads run already but create no
 * files at this point of the start. */
static int bind_with_mode(int fd, const struct sockaddr_un *sa, unsigned mode)
{
    mode_t old = umask(~(mode_t)mode & 0777);
    int rc = bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 ? -errno : 0;

    umask(old);
    return rc;
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
    if ((rc = check_socket_place(path)) < 0 || (rc = clear_stale_socket(path, &sa)) < 0)
        return rc;
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -errno;
    if ((rc = bind_with_mode(fd, &sa, mode)) < 0) {
        errno = -rc;
        log_warn("server: cannot bind unix socket %s", path);
        close(fd);
        return rc; /* what is at the path now is not ours to unlink */
    }
    if (listen(fd, LISTEN_BACKLOG) < 0) {
        rc = -errno;
        log_warn("server: cannot listen on unix socket %s", path);
        close(fd);
        unlink(path);
        return rc;
    }
    return fd;
}
