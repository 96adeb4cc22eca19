/* server/dns_watch.c: the dns.extra_records_path file read at start (refused when missing, a
 * directory, or not parsing) and followed while serving: a changed file hands new records to
 * the mapper and calls back once; a bad file or the same content does neither. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mapper/mapper_internal.h"
#include "server/dns_watch.h"

static struct {
    char dir[64], path[128];
    struct hs_config cfg;
    struct mapper *m;
    int calls;
    pthread_mutex_t mu;
} fx;

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    strcpy(fx.dir, "/tmp/hs-dnswatch-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir));
    snprintf(fx.path, sizeof(fx.path), "%s/records.json", fx.dir);
    fx.m = mapper_new(&fx.cfg, NULL);
    pthread_mutex_init(&fx.mu, NULL);
}

static void teardown(void)
{
    mapper_free(fx.m);
    unlink(fx.path);
    rmdir(fx.path); /* the directory case */
    rmdir(fx.dir);
    pthread_mutex_destroy(&fx.mu);
}

TestSuite(dns_watch, .init = setup, .fini = teardown);

/* Written beside and renamed over, as editors and config tools do. */
static void put(const char *text)
{
    char tmp[160];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.new", fx.path);
    cr_assert_not_null(f = fopen(tmp, "w"));
    fputs(text, f);
    fclose(f);
    cr_assert_eq(rename(tmp, fx.path), 0);
}

static size_t nrecords(const char **first)
{
    size_t n;

    pthread_mutex_lock(&fx.m->dns_mu);
    n = fx.m->nfile_records;
    if (first)
        *first = n ? fx.m->file_records[0].value : NULL;
    pthread_mutex_unlock(&fx.m->dns_mu);
    return n;
}

static void changed(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&fx.mu);
    fx.calls++;
    pthread_mutex_unlock(&fx.mu);
}

static int calls(void)
{
    int n;

    pthread_mutex_lock(&fx.mu);
    n = fx.calls;
    pthread_mutex_unlock(&fx.mu);
    return n;
}

/* Polls until calls() reaches want (a few watcher intervals at most). */
static bool wait_calls(int want)
{
    for (int i = 0; i < 100; i++) {
        if (calls() >= want)
            return true;
        usleep(50 * 1000);
    }
    return false;
}

#define REC(v) "[{\"Name\":\"db.example.com\",\"Type\":\"A\",\"Value\":\"" v "\"}]"

Test(dns_watch, refused_at_start)
{
    struct dns_watch *w = (void *)1;

    cr_expect_eq(dns_watch_new(fx.path, fx.m, &w), -ENOENT);
    cr_expect_null(w);
    cr_assert_eq(mkdir(fx.path, 0700), 0);
    cr_expect_eq(dns_watch_new(fx.path, fx.m, &w), -EISDIR);
    cr_assert_eq(rmdir(fx.path), 0);
    put("[{\"Name\": ");
    cr_expect_eq(dns_watch_new(fx.path, fx.m, &w), -EINVAL);
    put("[{\"Name\":\"a\",\"Type\":\"A\",\"Value\":\"fd7a::1\"}]");
    cr_expect_eq(dns_watch_new(fx.path, fx.m, &w), -EINVAL);
    cr_expect_eq(nrecords(NULL), 0);
    cr_expect_not(fx.m->file_records_set, "nothing applied from a refused file");
}

Test(dns_watch, follows_changes)
{
    struct dns_watch *w;
    const char *v;

    put(REC("100.64.0.1"));
    cr_assert_eq(dns_watch_new(fx.path, fx.m, &w), 0);
    cr_expect_eq(nrecords(&v), 1);
    cr_expect_str_eq(v, "100.64.0.1");
    cr_assert_eq(dns_watch_start(w, changed, NULL), 0);

    put(REC("100.64.0.2"));
    cr_assert(wait_calls(1), "no callback for a changed file");
    cr_expect_eq(nrecords(&v), 1);
    cr_expect_str_eq(v, "100.64.0.2");

    /* bad content, then the same content again, then a change: one more callback only */
    put("[{\"Name\":\"db.example.com\",\"Type\":\"MX\",\"Value\":\"x\"}]");
    usleep((DNS_WATCH_INTERVAL_MS + 300) * 1000); /* let the watcher see it (absence test) */
    cr_expect_eq(calls(), 1, "a bad file changes nothing");
    cr_expect_eq(nrecords(&v), 1);
    cr_expect_str_eq(v, "100.64.0.2");
    put(REC("100.64.0.2"));
    put("[]");
    cr_assert(wait_calls(2));
    cr_expect_eq(nrecords(NULL), 0, "an empty list clears");

    /* deleted: the records stay; back: applied */
    cr_assert_eq(unlink(fx.path), 0);
    put(REC("100.64.0.3"));
    cr_assert(wait_calls(3));
    cr_expect_eq(nrecords(&v), 1);
    cr_expect_str_eq(v, "100.64.0.3");
    dns_watch_free(w);
    cr_expect_eq(calls(), 3, "no call after free");
}
