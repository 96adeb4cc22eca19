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

/* The directory part of path ("." when it has none), caller frees. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (!slash)
        return hs_strdup(".");
    if (slash == path)
        return hs_strdup("/");
    return hs_strndup(path, (size_t)(slash - path));
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A rename is durable once the directory holding it is on disk. */
static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0 && errno != EINVAL) /* some filesystems cannot sync a directory */
        rc = -errno;
    close(fd);
    return rc;
}

/* The temporary file gets an unpredictable name and is created with O_EXCL (mkostemp), so a
 * file or symlink someone planted beside the target is never opened, followed or truncated.
 * mkostemp creates it 0600 (less with the umask); the requested mode is set on the open file
 * before the first byte goes in, so the data is never under a looser mode than asked for, not
 * even for a moment, and the umask does not decide it. */
int hs_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
    char *tmp = hs_aprintf("%s.tmp-XXXXXX", path), *dir = dir_of(path);
    int fd, rc;

    if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
        rc = -errno;
        goto out;
    }
    if (fchmod(fd, mode & 07777) < 0)
        rc = -errno;
    else
        rc = write_all(fd, data, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    else
        rc = fsync_dir(dir);
out:
    free(dir);
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

/* ---- who could replace a file: the directories above it ---- */

static bool trusted_uid(uid_t uid)
{
    return uid == 0 || uid == geteuid();
}

/* A directory others may add to, rename in or delete from. */
static bool open_to_others(const struct stat *st)
{
    return (st->st_mode & (S_IWGRP | S_IWOTH)) != 0;
}

/* One directory on the way: who may change what it holds. */
static int judge_dir(const char *p, const struct stat *st, unsigned flags, char *why, size_t n)
{
    unsigned mode = (unsigned)st->st_mode & 07777;

    if ((flags & HS_PATH_STRICT_OWNER) && !trusted_uid(st->st_uid)) {
        snprintf(why, n, "%s belongs to uid %u, neither root nor this process's user (uid %u)",
                 p, (unsigned)st->st_uid, (unsigned)geteuid());
        return HS_PATH_UNSAFE;
    }
    if (st->st_mode & S_ISVTX)
        return HS_PATH_SAFE; /* others may add entries but not touch ours (checked per entry) */
    if (st->st_mode & S_IWOTH) {
        snprintf(why, n, "%s is writable by every user and has no sticky bit (mode %04o)", p,
                 mode);
        return HS_PATH_UNSAFE;
    }
    if (st->st_mode & S_IWGRP) {
        snprintf(why, n, "%s is writable by its group (gid %u, mode %04o)", p,
                 (unsigned)st->st_gid, mode);
        return HS_PATH_GROUP_WRITABLE;
    }
    return HS_PATH_SAFE;
}

/* An entry of a sticky directory others can write: anyone could have created it, so only
 * root's or our own can be trusted. */
static int judge_entry(const char *p, const struct stat *parent, const struct stat *lst,
                       char *why, size_t n)
{
    if (!(parent->st_mode & S_ISVTX) || !open_to_others(parent) || trusted_uid(lst->st_uid))
        return HS_PATH_SAFE;
    snprintf(why, n, "%s belongs to uid %u, neither root nor this process's user, in a sticky "
             "directory others can write (whoever made it first owns it)", p,
             (unsigned)lst->st_uid);
    return HS_PATH_UNSAFE;
}

/* Judges one part of the walk: the entry itself (lstat) and, for a directory, what it holds.
 * *isdir says whether the walk may go on below it. */
static int judge_step(const char *p, const struct stat *parent, struct stat *st, bool *isdir,
                      unsigned flags, char *why, size_t n)
{
    struct stat lst;
    int v;

    *isdir = false;
    if (lstat(p, &lst) < 0)
        return errno == ENOENT ? HS_PATH_SAFE : -errno; /* nothing there to be replaced */
    if ((v = judge_entry(p, parent, &lst, why, n)) != HS_PATH_SAFE)
        return v;
    if (stat(p, st) < 0)
        return errno == ENOENT ? HS_PATH_SAFE : -errno; /* a dangling link */
    if (!S_ISDIR(st->st_mode))
        return HS_PATH_SAFE;
    *isdir = true;
    return judge_dir(p, st, flags, why, n);
}

/* Walks an absolute path from "/" down to its last part (or to the first that is missing).
 * Returns the worst verdict, with the first reason for it in why. */
static int walk(char *abs, unsigned flags, char *why, size_t n)
{
    struct stat parent, st;
    char reason[1024];
    size_t len = strlen(abs);
    int worst, v;
    bool isdir = true;

    if (stat("/", &parent) < 0)
        return -errno;
    worst = judge_dir("/", &parent, flags, why, n);
    for (size_t i = 1; i <= len && isdir && worst != HS_PATH_UNSAFE; i++) {
        char c = abs[i];
        if ((c != '/' && c != '\0') || abs[i - 1] == '/')
            continue;
        abs[i] = '\0';
        v = judge_step(abs, &parent, &st, &isdir, flags, reason, sizeof(reason));
        abs[i] = c;
        if (v < 0)
            return v;
        if (v > worst) {
            worst = v;
            snprintf(why, n, "%s", reason);
        }
        if (isdir)
            parent = st;
    }
    return worst;
}

static char *absolute(const char *path)
{
    char cwd[4096];

    if (path[0] == '/')
        return hs_strdup(path);
    if (!getcwd(cwd, sizeof(cwd)))
        return NULL;
    return hs_aprintf("%s/%s", cwd, path);
}

/* path with every symlink resolved; when its last part does not exist yet, its directory's. */
static char *resolved(const char *abs)
{
    char *real = realpath(abs, NULL), *dir, *full;

    if (real || errno != ENOENT)
        return real;
    dir = dir_of(abs);
    real = realpath(dir, NULL);
    free(dir);
    if (!real)
        return NULL;
    full = hs_aprintf("%s/%s", strcmp(real, "/") ? real : "", strrchr(abs, '/') + 1);
    free(real);
    return full;
}

/* Symlinks on the way are judged where they sit (the path as written) and where they lead
 * (resolved): a link kept safe is no better than the directory it points into. */
int hs_path_trust(const char *path, unsigned flags, char *why, size_t whysize)
{
    char *abs = absolute(path), *real = NULL, reason[1024];
    int v, w = HS_PATH_SAFE;

    if (whysize)
        why[0] = '\0';
    if (!abs)
        return -errno;
    v = walk(abs, flags, why, whysize);
    if (v >= 0 && v != HS_PATH_UNSAFE && (real = resolved(abs))) {
        w = walk(real, flags, reason, sizeof(reason));
        if (w > v)
            snprintf(why, whysize, "%s", reason);
    }
    free(real);
    free(abs);
    if (v < 0 || w < 0)
        return v < 0 ? v : w;
    return v > w ? v : w;
}
