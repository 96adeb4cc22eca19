/* server: dns.extra_records_path, read at start and followed while serving.
 *
 * A thread looks at the file every DNS_WATCH_INTERVAL_MS. Polling rather than inotify: it
 * follows the file through everything editors and config tools do to it (rewritten in place,
 * replaced by rename, deleted and created again, a symlink swapped) without re-arming
 * watches, and a second is well inside what an operator waits for. A changed file is read
 * whole; when its content differs from what was last applied and parses, its records replace
 * the old ones and every node is sent the new DNSConfig. A file that does not parse leaves the
 * records in force and says why in the log, once per version of the file. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "server/dns_watch.h"

struct dns_watch {
    char *path;
    struct mapper *mapper;
    dns_watch_fn changed;
    void *arg;
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    /* held while the file is looked at: by the thread, or by dns_watch_reload */
    pthread_mutex_t check_mu;
    /* what was seen last: the file's identity, and the text last applied */
    struct stat seen;
    bool missing;
    char *applied;
    size_t applied_len;
    size_t nrecords;
};

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Reads and applies the file (first: at start, where a problem stops the server). 1: new
 * records applied; 0: nothing new; -EINVAL or -errno: refused, and logged. */
static int load(struct dns_watch *w, bool first)
{
    struct dns_record *v;
    char *text, err[256];
    size_t len, n;
    int rc;

    rc = hs_read_file(w->path, CONFIG_MAX_EXTRA_RECORDS_BYTES, &text, &len);
    if (rc < 0) {
        log_errorx("dns: extra_records_path %s: %s%s", w->path,
                   rc == -E2BIG ? "larger than 8 MiB" : hs_strerror(rc),
                   first ? "" : "; the records in force stay");
        return rc;
    }
    if (!first && w->applied && len == w->applied_len && memcmp(text, w->applied, len) == 0) {
        free(text); /* touched, not changed */
        return 0;
    }
    rc = config_dns_records_parse(text, len, &v, &n, err, sizeof(err));
    if (rc < 0) {
        log_errorx("dns: extra_records_path %s: %s; %s", w->path, err,
                   first ? "fix it or remove the key"
                         : "the records in force stay (fix the file to apply it)");
        free(text);
        return rc;
    }
    if (rc == 1) { /* empty or null: being written, the next change brings the content */
        free(text);
        if (first)
            mapper_set_extra_records(w->mapper, NULL, 0);
        return 0;
    }
    mapper_set_extra_records(w->mapper, v, n);
    free(w->applied);
    w->applied = text;
    w->applied_len = len;
    if (first)
        log_info("dns: %zu extra records from %s", n, w->path);
    else
        log_info("dns: extra_records_path %s changed (%zu records before, %zu now): sending "
                 "every node the new DNS configuration", w->path, w->nrecords, n);
    w->nrecords = n;
    return 1;
}

int dns_watch_new(const char *path, struct mapper *m, struct dns_watch **out)
{
    struct dns_watch *w = hs_xcalloc(1, sizeof(*w));
    int rc;

    *out = NULL;
    w->path = hs_strdup(path);
    w->mapper = m;
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->check_mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    if (stat(path, &w->seen) < 0) {
        rc = -errno;
        log_errorx("dns: extra_records_path %s: %s", path, hs_strerror(rc));
        dns_watch_free(w);
        return rc;
    }
    if (S_ISDIR(w->seen.st_mode)) {
        log_errorx("dns: extra_records_path %s is a directory, not a file", path);
        dns_watch_free(w);
        return -EISDIR;
    }
    if ((rc = load(w, true)) < 0) {
        dns_watch_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

/* check_mu held. */
static void check(struct dns_watch *w)
{
    struct stat st;

    if (stat(w->path, &st) < 0) {
        if (!w->missing)
            log_warnx("dns: extra_records_path %s: %s; the records in force stay until it is "
                      "back", w->path, strerror(errno));
        w->missing = true;
        return;
    }
    if (!w->missing && same_file(&st, &w->seen))
        return;
    w->missing = false;
    w->seen = st;
    if (!S_ISDIR(st.st_mode) && load(w, false) > 0 && w->changed)
        w->changed(w->arg);
}

static void *run(void *arg)
{
    struct dns_watch *w = arg;

    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        hs_cond_wait_until(&w->cond, &w->mu, hs_monotonic_us() + DNS_WATCH_INTERVAL_MS * 1000LL);
        if (w->stop)
            break;
        pthread_mutex_unlock(&w->mu);
        pthread_mutex_lock(&w->check_mu);
        check(w);
        pthread_mutex_unlock(&w->check_mu);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int dns_watch_start(struct dns_watch *w, dns_watch_fn changed, void *arg)
{
    int rc;

    w->changed = changed;
    w->arg = arg;
    /* the wait above counts on the monotonic clock: a clock step must not stall it */
    pthread_cond_destroy(&w->cond);
    hs_cond_init_monotonic(&w->cond);
    if ((rc = pthread_create(&w->thread, NULL, run, w)) != 0) {
        log_errorx("dns: cannot start the extra records watcher: %s", strerror(rc));
        return -rc;
    }
    w->running = true;
    log_info("dns: watching %s for changes (every %d ms)", w->path, DNS_WATCH_INTERVAL_MS);
    return 0;
}

int dns_watch_reload(struct dns_watch *w)
{
    struct stat st;
    int rc;

    pthread_mutex_lock(&w->check_mu);
    if (stat(w->path, &st) == 0) {
        w->seen = st;
        w->missing = false;
    }
    if ((rc = load(w, false)) > 0 && w->changed)
        w->changed(w->arg);
    pthread_mutex_unlock(&w->check_mu);
    return rc;
}

const char *dns_watch_path(const struct dns_watch *w) { return w->path; }

void dns_watch_free(struct dns_watch *w)
{
    if (!w)
        return;
    if (w->running) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
    }
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->check_mu);
    pthread_cond_destroy(&w->cond);
    free(w->applied);
    free(w->path);
    free(w);
}
