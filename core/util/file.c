#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

int hs_read_file(const char *path, size_t max, char **out, size_t *len)
{
    struct hs_buf b;
    char chunk[8192];
    ssize_t n;
    int fd, rc = 0;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -errno;
    hs_buf_init(&b, max);
    hs_buf_append(&b, "", 0);
    while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if ((rc = hs_buf_append(&b, chunk, (size_t)n)) < 0)
            break;
    }
    close(fd);
    if (rc < 0) {
        hs_buf_free(&b);
        return rc;
    }
    if (len)
        *len = b.len;
    *out = hs_buf_steal(&b);
    return 0;
}

int hs_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
    char *tmp = hs_aprintf("%s.tmp.%ld", path, (long)getpid());
    const char *p = data;
    int fd, rc = 0;

    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)) < 0) {
        rc = -errno;
        goto out;
    }
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        p += n;
        len -= (size_t)n;
    }
    if (rc == 0 && (fchmod(fd, mode) < 0 || fsync(fd) < 0))
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
out:
    free(tmp);
    return rc;
}

int hs_mkdir_p(const char *path, unsigned mode)
{
    char *p = hs_strdup(path);
    int rc = 0;

    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST) {
            rc = -errno;
            break;
        }
        *s = '/';
    }
    if (rc == 0 && mkdir(p, mode) < 0 && errno != EEXIST)
        rc = -errno;
    free(p);
    return rc;
}
