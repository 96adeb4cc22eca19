#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

Test(buf, append_stops_at_max)
{
    struct hs_buf b;
    hs_buf_init(&b, 4);
    cr_assert_eq(hs_buf_append(&b, "abcd", 4), 0);
    cr_assert_eq(hs_buf_append(&b, "e", 1), -E2BIG);
    cr_assert_eq(b.len, 4);
    cr_assert_str_eq(b.data, "abcd");
    cr_assert_eq(hs_buf_appendf(&b, "%d", 1), -E2BIG);
    cr_assert_eq(b.len, 4);
    hs_buf_free(&b);
}

Test(buf, appendf_grows)
{
    struct hs_buf b;
    hs_buf_init(&b, 1 << 20);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(hs_buf_appendf(&b, "%04d", i), 0);
    cr_assert_eq(b.len, 4000);
    cr_assert(strncmp(b.data + 3996, "0999", 4) == 0);
    hs_buf_free(&b);
}

Test(parse, u64_bounds)
{
    uint64_t v;
    cr_assert_eq(hs_parse_u64("18446744073709551615", UINT64_MAX, &v), 0);
    cr_assert_eq(v, UINT64_MAX);
    cr_assert_eq(hs_parse_u64("18446744073709551616", UINT64_MAX, &v), -ERANGE);
    cr_assert_eq(hs_parse_u64("65536", 65535, &v), -ERANGE);
    cr_assert_eq(hs_parse_u64("", 10, &v), -EINVAL);
    cr_assert_eq(hs_parse_u64("12a", 100, &v), -EINVAL);
    cr_assert_eq(hs_parse_u64("-1", 100, &v), -EINVAL);
}

Test(parse, durations)
{
    static const struct { const char *s; int64_t us; } ok[] = {
        { "0", 0 },
        { "30s", 30 * HS_USEC_PER_SEC },
        { "30m", 1800 * HS_USEC_PER_SEC },
        { "24h", 86400 * HS_USEC_PER_SEC },
        { "365d", 365 * 86400 * HS_USEC_PER_SEC },
        { "1w", 7 * 86400 * HS_USEC_PER_SEC },
        { "1y", 365 * 86400 * HS_USEC_PER_SEC },
        { "800ms", 800000 },
        { "1h30m", 5400 * HS_USEC_PER_SEC },
        { "1.5h", 5400 * HS_USEC_PER_SEC },
        { "250us", 250 },
    };
    static const char *const bad[] = { "", "s", "30", "30x", "-5s", "1h-", "abc", "1..5h",
                                       "99999999999999999999d" };
    int64_t us;

    for (size_t i = 0; i < HS_ARRAY_LEN(ok); i++) {
        cr_assert_eq(hs_parse_duration(ok[i].s, &us), 0, "%s", ok[i].s);
        cr_assert_eq(us, ok[i].us, "%s", ok[i].s);
    }
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++)
        cr_assert_lt(hs_parse_duration(bad[i], &us), 0, "%s accepted", bad[i]);
}

/* The keep-alive split: probes from a third of the timeout, every sixth, and the whole of it
 * as TCP_USER_TIMEOUT; a socket takes it as computed. */
Test(sock, keepalive_split_and_set)
{
    struct hs_keepalive k;
    unsigned got_ut = 0;
    int fd, got_idle = 0, on = 0;
    socklen_t len = sizeof(int);

    hs_keepalive_for(60 * HS_USEC_PER_SEC, &k);
    cr_assert(k.idle_s == 20 && k.interval_s == 10 && k.user_timeout_ms == 60000);
    cr_assert_geq(k.idle_s + k.count * k.interval_s, 60);
    hs_keepalive_for(2 * HS_USEC_PER_SEC, &k);
    cr_assert(k.idle_s == 1 && k.interval_s == 1 && k.user_timeout_ms == 2000);
    hs_keepalive_for(0, &k); /* never below a second */
    cr_assert(k.idle_s == 1 && k.interval_s == 1 && k.user_timeout_ms == 1000);

    hs_keepalive_for(15 * HS_USEC_PER_SEC, &k);
    cr_assert_geq(fd = socket(AF_INET, SOCK_STREAM, 0), 0);
    cr_assert_eq(hs_keepalive_set(fd, &k), 0);
    getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, &len);
    getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &got_idle, &len);
    getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &got_ut, &len);
    cr_assert(on && got_idle == 5 && got_ut == 15000);
    close(fd);
    cr_assert_eq(hs_keepalive_set(-1, &k), -EBADF);
}

Test(time, rfc3339_round_trip)
{
    char buf[48];
    int64_t us;

    cr_assert_eq(hs_parse_rfc3339("2024-02-29T12:34:56Z", &us), 0);
    hs_format_rfc3339(us, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2024-02-29T12:34:56Z");
    cr_assert_eq(hs_parse_rfc3339("2024-02-29T12:34:56.250+02:00", &us), 0);
    hs_format_rfc3339(us, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2024-02-29T10:34:56.250Z");
    cr_assert_eq(hs_parse_rfc3339("2024-01-01T00:00:00.123456789Z", &us), 0);
    hs_format_rfc3339(us, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2024-01-01T00:00:00.123456Z");
}

Test(time, rfc3339_rejects)
{
    static const char *const bad[] = { "", "2024-02-30T00:00:00Z", "2024-13-01T00:00:00Z",
                                       "2024-01-01", "2024-01-01T00:00:00", "tomorrow",
                                       "2024-01-01T25:00:00Z", "2024-01-01T00:00:00Zjunk",
                                       "2024-01-01T00:00:00." };
    int64_t us;
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++)
        cr_assert_eq(hs_parse_rfc3339(bad[i], &us), -EINVAL, "%s accepted", bad[i]);
}

/* A monotonic wait ends at its monotonic deadline (not earlier, not much later); one already
 * past ends at once; a signal ends it early and says so. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool waiting, timed_out;
};

static void *wait_long(void *arg)
{
    struct waiter *w = arg;

    pthread_mutex_lock(&w->mu);
    w->waiting = true; /* the mutex is ours until the wait lets go of it */
    w->timed_out = hs_cond_wait_until(&w->cond, &w->mu, hs_monotonic_us() + 60 * HS_USEC_PER_SEC);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

Test(time, monotonic_condition_waits)
{
    struct waiter w = { .mu = PTHREAD_MUTEX_INITIALIZER };
    pthread_t t;
    int64_t start, took;
    bool timed_out;

    hs_cond_init_monotonic(&w.cond);
    pthread_mutex_lock(&w.mu);
    start = hs_monotonic_us();
    while (!(timed_out = hs_cond_wait_until(&w.cond, &w.mu, start + 50000)) &&
           hs_monotonic_us() < start + 50000)
        ; /* a spurious wake-up waits again */
    took = hs_monotonic_us() - start;
    cr_expect(timed_out);
    cr_expect(took >= 50000 && took < 2 * HS_USEC_PER_SEC, "waited %lld us", (long long)took);
    start = hs_monotonic_us();
    cr_expect(hs_cond_wait_until(&w.cond, &w.mu, start - HS_USEC_PER_SEC), "a past deadline");
    cr_expect(hs_cond_wait_until(&w.cond, &w.mu, -1), "a deadline before the clock began");
    cr_expect_lt(hs_monotonic_us() - start, HS_USEC_PER_SEC);
    pthread_mutex_unlock(&w.mu);

    cr_assert_eq(pthread_create(&t, NULL, wait_long, &w), 0);
    for (int i = 0; i < 5000; i++) {
        bool signalled;
        pthread_mutex_lock(&w.mu);
        if ((signalled = w.waiting))
            pthread_cond_signal(&w.cond);
        pthread_mutex_unlock(&w.mu);
        if (signalled)
            break;
        usleep(1000);
    }
    pthread_join(t, NULL);
    cr_expect_not(w.timed_out, "the signal ended the wait");
    pthread_cond_destroy(&w.cond);
}

/* Counts the files under dir (recursively) other than allowed whose text has needle. */
static int files_with(const char *dir, const char *needle, const char *allowed)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    cr_assert_not_null(d, "%s", dir);
    while ((e = readdir(d))) {
        char path[512], *text;
        size_t len;
        struct stat sb;

        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        cr_assert_eq(stat(path, &sb), 0);
        if (S_ISDIR(sb.st_mode)) {
            n += files_with(path, needle, allowed);
            continue;
        }
        if (strcmp(path + strlen(path) - 2, ".c") != 0 || strstr(path, allowed))
            continue;
        cr_assert_eq(hs_read_file(path, 1 << 24, &text, &len), 0, "%s", path);
        if (strstr(text, needle)) {
            cr_log_error("%s uses %s", path, needle);
            n++;
        }
        free(text);
    }
    closedir(d);
    return n;
}

/* A timed wait on the wall clock stalls for as long as the clock is set back (and fires at
 * once when it is set forward); libfaketime cannot show it, as it moves such waits along with
 * the clock it fakes. So every timed wait goes through hs_cond_wait_until. */
Test(time, every_timed_wait_is_monotonic)
{
    static const char *const dirs[] = { HS_SOURCE_DIR "/core", HS_SOURCE_DIR "/webadmin" };

    for (size_t i = 0; i < HS_ARRAY_LEN(dirs); i++) {
        cr_expect_eq(files_with(dirs[i], "pthread_cond_timedwait", "core/util/time.c"), 0);
        cr_expect_eq(files_with(dirs[i], "CLOCK_REALTIME", "core/util/time.c"), 0);
    }
}

Test(hex, decode_exact)
{
    uint8_t out[2];
    cr_assert_eq(hs_hex_decode("0aFf", 4, out, 2), 0);
    cr_assert_eq(out[0], 0x0a);
    cr_assert_eq(out[1], 0xff);
    cr_assert_eq(hs_hex_decode("0aF", 3, out, 2), -EINVAL);
    cr_assert_eq(hs_hex_decode("0aFg", 4, out, 2), -EINVAL);
}

Test(strv, split_and_contains)
{
    struct hs_strv sv = { 0 };
    hs_strv_split(&sv, " tag:a,,tag:b ,", ", ");
    cr_assert_eq(sv.n, 2);
    cr_assert(hs_strv_contains(&sv, "tag:b"));
    cr_assert(!hs_strv_contains(&sv, "tag:c"));
    hs_strv_free(&sv);
}

Test(strv, equal_means_same_strings_in_the_same_order)
{
    struct hs_strv a = { 0 }, b = { 0 };

    hs_strv_split(&a, "x,y", ",");
    hs_strv_split(&b, "y,x", ",");
    cr_assert(!hs_strv_equal(&a, &b));
    hs_strv_free(&b);
    hs_strv_split(&b, "x,y", ",");
    cr_assert(hs_strv_equal(&a, &b));
    hs_strv_push(&b, "z");
    cr_assert(!hs_strv_equal(&a, &b));
    hs_strv_free(&a);
    hs_strv_free(&b);
}

Test(strv, grows_by_doubling_and_stays_terminated)
{
    struct hs_strv sv = { 0 };
    char name[16];
    size_t grew = 0, last_cap = 0;

    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "d%d", i);
        hs_strv_push(&sv, name);
        cr_assert_null(sv.v[sv.n]);
        cr_assert_geq(sv.cap, sv.n + 1);
        grew += sv.cap != last_cap;
        last_cap = sv.cap;
    }
    cr_assert_str_eq(sv.v[0], "d0");
    cr_assert_str_eq(sv.v[4999], "d4999");
    cr_assert_leq(grew, 13, "5000 pushes took %zu allocations", grew);
    hs_strv_free(&sv);
    cr_assert_eq(sv.cap, 0);
}

Test(strv, push_onto_a_list_built_by_hand)
{
    char **v = hs_xcalloc(2, sizeof(*v));
    v[0] = hs_strdup("a");
    struct hs_strv sv = { .v = v, .n = 1 };

    hs_strv_push(&sv, "b");
    cr_assert_eq(sv.n, 2);
    cr_assert_str_eq(sv.v[1], "b");
    cr_assert_null(sv.v[2]);
    hs_strv_free(&sv);
}

Test(json, rejects_duplicates_and_size)
{
    char err[128];
    json_t *j = hs_json_load("{\"a\":1,\"a\":2}", 13, 100, err, sizeof(err));
    cr_assert_null(j);
    cr_assert(strstr(err, "duplicate") != NULL, "%s", err);
    cr_assert_null(hs_json_load("{}", 2, 1, err, sizeof(err)));
    cr_assert(strstr(err, "limit") != NULL);
}

Test(utf8, valid_and_sanitize)
{
    char s[] = "ok \xe2\x98\x83 \xff \xe2\x98 end";
    cr_assert(hs_utf8_valid("snow \xe2\x98\x83", 8));
    cr_assert(!hs_utf8_valid("\xc0\xaf", 2), "overlong");
    cr_assert(!hs_utf8_valid("\xed\xa0\x80", 3), "surrogate");
    cr_assert(!hs_utf8_valid("\xf4\x90\x80\x80", 4), "beyond U+10FFFF");
    cr_assert(!hs_utf8_valid(s, strlen(s)));
    hs_utf8_sanitize(s);
    cr_assert(hs_utf8_valid(s, strlen(s)));
    cr_assert_str_eq(s, "ok \xe2\x98\x83 ? ?? end");
}

Test(buf, truncate_undoes_appends)
{
    struct hs_buf b;

    hs_buf_init(&b, 64);
    cr_assert_eq(hs_buf_puts(&b, "keep"), 0);
    cr_assert_eq(hs_buf_puts(&b, "-drop"), 0);
    hs_buf_truncate(&b, 4);
    cr_assert_eq(b.len, 4);
    cr_assert_str_eq(b.data, "keep");
    hs_buf_truncate(&b, 10); /* past the end: nothing to cut */
    cr_assert_str_eq(b.data, "keep");
    hs_buf_free(&b);
}

/* Consuming in frames does not move the rest each time; appends, resets, steals and frees
 * after a consume see the right bytes and a block malloc gave (ASan checks the frees). */
Test(buf, consume_is_cheap_and_keeps_contents)
{
    struct hs_buf b, model;
    char chunk[97];
    unsigned seed = 7;

    hs_buf_init(&b, 1 << 20);
    for (int i = 0; i < 10000; i++)
        cr_assert_eq(hs_buf_appendf(&b, "%04d", i), 0);
    char *before = b.data;
    hs_buf_consume(&b, 16);
    cr_assert_eq(b.data, before + 16, "the rest moved");
    cr_assert(strncmp(b.data, "0004", 4) == 0);
    cr_assert_eq(b.len, 40000 - 16);

    hs_buf_init(&model, 1 << 20);
    cr_assert_eq(hs_buf_append(&model, b.data, b.len), 0);
    for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245 + 12345;
        size_t n = (seed >> 8) % sizeof(chunk);
        if ((seed >> 4) & 1) {
            memset(chunk, 'a' + (int)(i % 26), n);
            cr_assert_eq(hs_buf_append(&b, chunk, n), 0);
            cr_assert_eq(hs_buf_append(&model, chunk, n), 0);
        } else {
            hs_buf_consume(&b, n);
            size_t m = n < model.len ? n : model.len; /* the model moves its bytes */
            memmove(model.data, model.data + m, model.len - m);
            model.len -= m;
            model.data[model.len] = '\0';
        }
        cr_assert_eq(b.len, model.len);
        cr_assert_eq(b.data[b.len], '\0');
        cr_assert(memcmp(b.data, model.data, b.len) == 0, "step %d", i);
    }
    hs_buf_consume(&b, 1);
    char *stolen = hs_buf_steal(&b);
    cr_assert(strcmp(stolen, model.data + 1) == 0);
    free(stolen);
    cr_assert_eq(hs_buf_puts(&b, "xyz"), 0);
    hs_buf_consume(&b, 1);
    hs_buf_reset(&b);
    cr_assert_eq(hs_buf_puts(&b, "again"), 0);
    cr_assert_str_eq(b.data, "again");
    hs_buf_consume(&b, 2);
    hs_buf_free(&b);
    hs_buf_free(&model);
}

/* ---- hs_write_file_atomic ---- */

static char *tmp_dir(void)
{
    char *d = strdup("/tmp/test_util_XXXXXX");
    cr_assert_not_null(mkdtemp(d));
    return d;
}

static void put(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    cr_assert_geq(fd, 0, "%s", path);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static char *slurp(const char *path)
{
    char *text = NULL;
    cr_assert_eq(hs_read_file(path, 1 << 20, &text, NULL), 0, "%s", path);
    return text;
}

static size_t dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;

    cr_assert_not_null(d);
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void rm_rf(const char *dir)
{
    char *cmd = hs_aprintf("rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
    free(cmd);
}

Test(file, write_atomic_sets_the_mode_whatever_the_umask)
{
    char *d = tmp_dir(), *p = hs_aprintf("%s/key", d), *text;
    mode_t old = umask(077);
    struct stat st;

    cr_assert_eq(hs_write_file_atomic(p, "secret\n", 7, 0640), 0);
    umask(old);
    cr_assert_eq(lstat(p, &st), 0);
    cr_assert(S_ISREG(st.st_mode));
    cr_assert_eq(st.st_mode & 07777, 0640, "mode %o", st.st_mode & 07777);
    cr_assert_eq(st.st_uid, geteuid());
    text = slurp(p);
    cr_assert_str_eq(text, "secret\n");
    free(text);
    cr_assert_eq(dir_entries(d), 1, "a temporary file was left behind");
    rm_rf(d);
    free(p);
    free(d);
}

Test(file, write_atomic_replaces_a_file_and_a_symlink_without_following_it)
{
    char *d = tmp_dir(), *p = hs_aprintf("%s/key", d), *victim = hs_aprintf("%s/victim", d);
    char *text;
    struct stat st;

    put(p, "old contents, longer than the new\n", 0644);
    cr_assert_eq(hs_write_file_atomic(p, "new\n", 4, 0600), 0);
    text = slurp(p);
    cr_assert_str_eq(text, "new\n");
    free(text);
    /* A symlink at the target is replaced, not written through. */
    put(victim, "victim\n", 0644);
    cr_assert_eq(unlink(p), 0);
    cr_assert_eq(symlink(victim, p), 0);
    cr_assert_eq(hs_write_file_atomic(p, "new\n", 4, 0600), 0);
    cr_assert_eq(lstat(p, &st), 0);
    cr_assert(S_ISREG(st.st_mode), "the symlink is still there");
    text = slurp(victim);
    cr_assert_str_eq(text, "victim\n");
    free(text);
    cr_assert_eq(dir_entries(d), 2);
    rm_rf(d);
    free(victim);
    free(p);
    free(d);
}

/* Another user who can write the directory plants what the old code opened: "<path>.tmp.<pid>"
 * as a file of theirs (to read the secret from) and as a symlink (to clobber its target). */
Test(file, write_atomic_ignores_planted_temporary_names)
{
    char *d = tmp_dir(), *p = hs_aprintf("%s/key", d);
    char *planted = hs_aprintf("%s.tmp.%ld", p, (long)getpid());
    char *link = hs_aprintf("%s.tmp", p), *victim = hs_aprintf("%s/victim", d), *text;
    struct stat st;

    put(planted, "", 0666);
    cr_assert_eq(chmod(planted, 0666), 0); /* the umask took some */
    put(victim, "do not touch\n", 0644);
    cr_assert_eq(symlink(victim, link), 0);
    cr_assert_eq(hs_write_file_atomic(p, "privkey:secret\n", 15, 0600), 0);
    text = slurp(planted);
    cr_assert_str_eq(text, "", "the secret went into the planted file");
    free(text);
    cr_assert_eq(stat(planted, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0666, "the planted file was changed");
    text = slurp(victim);
    cr_assert_str_eq(text, "do not touch\n", "the symlink was followed");
    free(text);
    cr_assert_eq(lstat(p, &st), 0);
    cr_assert(S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0600);
    text = slurp(p);
    cr_assert_str_eq(text, "privkey:secret\n");
    free(text);
    cr_assert_eq(dir_entries(d), 4, "planted, link, victim, key and nothing else");
    /* The same with the planted symlink at the old predictable name itself. */
    cr_assert_eq(unlink(planted), 0);
    cr_assert_eq(symlink(victim, planted), 0);
    cr_assert_eq(hs_write_file_atomic(p, "privkey:other\n", 14, 0600), 0);
    text = slurp(victim);
    cr_assert_str_eq(text, "do not touch\n", "the symlink was followed");
    free(text);
    cr_assert_eq(lstat(planted, &st), 0);
    cr_assert(S_ISLNK(st.st_mode));
    rm_rf(d);
    free(victim);
    free(link);
    free(planted);
    free(p);
    free(d);
}

Test(file, write_atomic_failure_changes_nothing)
{
    char *d = tmp_dir(), *missing = hs_aprintf("%s/no/such/key", d);
    char *sub = hs_aprintf("%s/sub", d);

    cr_assert_eq(hs_write_file_atomic(missing, "x", 1, 0600), -ENOENT);
    cr_assert_eq(mkdir(sub, 0700), 0);
    cr_assert_lt(hs_write_file_atomic(sub, "x", 1, 0600), 0, "a directory is not replaced");
    cr_assert_eq(dir_entries(d), 1, "a temporary file was left behind");
    cr_assert_eq(dir_entries(sub), 0);
    rm_rf(d);
    free(sub);
    free(missing);
    free(d);
}

/* ---- hs_path_trust ---- */

static int trust(const char *path, unsigned flags, char *why)
{
    return hs_path_trust(path, flags, why, 1024);
}

Test(file, path_trust_judges_every_directory)
{
    char *d = tmp_dir(), why[1024];
    char *sub = hs_aprintf("%s/sub", d), *sock = hs_aprintf("%s/sub/x.sock", d);

    cr_assert_eq(mkdir(sub, 0755), 0);
    cr_assert_eq(trust(sock, 0, why), HS_PATH_SAFE, "%s", why);
    cr_assert_eq(trust(sock, HS_PATH_STRICT_OWNER, why), HS_PATH_SAFE, "%s", why);
    /* Missing parts are not judged: there is nothing yet that could be replaced. */
    cr_assert_eq(trust("/tmp/test_util_no_such_dir/a/b", 0, why), HS_PATH_SAFE, "%s", why);

    cr_assert_eq(chmod(sub, 0777), 0);
    cr_assert_eq(trust(sock, 0, why), HS_PATH_UNSAFE);
    cr_assert(strstr(why, sub) && strstr(why, "writable by every user"), "%s", why);
    cr_assert_eq(chmod(d, 0777), 0); /* the first unsafe directory is named */
    cr_assert_eq(trust(sock, 0, why), HS_PATH_UNSAFE);
    cr_assert(strstr(why, d) && !strstr(why, "/sub"), "%s", why);
    cr_assert_eq(chmod(d, 0700), 0);

    cr_assert_eq(chmod(sub, 0775), 0);
    cr_assert_eq(trust(sock, 0, why), HS_PATH_GROUP_WRITABLE);
    cr_assert(strstr(why, "writable by its group"), "%s", why);
    cr_assert_eq(chmod(sub, 01777), 0); /* sticky: others cannot touch our entries */
    cr_assert_eq(trust(sock, 0, why), HS_PATH_SAFE, "%s", why);
    rm_rf(d);
    free(sock);
    free(sub);
    free(d);
}

Test(file, path_trust_owners)
{
    char *d = tmp_dir(), why[1024];
    char *sub = hs_aprintf("%s/sub", d), *sock = hs_aprintf("%s/sub/x.sock", d);

    if (geteuid() != 0)
        cr_skip_test("needs root to give a directory to another user");
    cr_assert_eq(mkdir(sub, 0755), 0);
    cr_assert_eq(chown(sub, 54321, 54321), 0);
    /* Another user's directory inside ours: handed over by us, fine unless strict. */
    cr_assert_eq(trust(sock, 0, why), HS_PATH_SAFE, "%s", why);
    cr_assert_eq(trust(sock, HS_PATH_STRICT_OWNER, why), HS_PATH_UNSAFE);
    cr_assert(strstr(why, "belongs to uid 54321"), "%s", why);
    /* In a sticky directory anyone can write, whoever came first owns the name. */
    cr_assert_eq(chmod(d, 01777), 0);
    cr_assert_eq(trust(sock, 0, why), HS_PATH_UNSAFE);
    cr_assert(strstr(why, "sticky"), "%s", why);
    cr_assert_eq(chown(sub, 0, 0), 0);
    cr_assert_eq(trust(sock, 0, why), HS_PATH_SAFE, "%s", why);
    rm_rf(d);
    free(sock);
    free(sub);
    free(d);
}

Test(file, path_trust_follows_symlinks_both_ways)
{
    char *d = tmp_dir(), why[1024];
    char *open_dir = hs_aprintf("%s/open", d), *link = hs_aprintf("%s/link", d);
    char *sock = hs_aprintf("%s/link/x.sock", d);

    cr_assert_eq(mkdir(open_dir, 0700), 0);
    cr_assert_eq(symlink(open_dir, link), 0);
    cr_assert_eq(trust(sock, 0, why), HS_PATH_SAFE, "%s", why);
    cr_assert_eq(chmod(open_dir, 0777), 0);
    cr_assert_eq(trust(sock, 0, why), HS_PATH_UNSAFE, "a safe link into an open directory");
    cr_assert(strstr(why, "writable by every user"), "%s", why);
    rm_rf(d);
    free(sock);
    free(link);
    free(open_dir);
    free(d);
}

/* A hash headscale 0.29.3 (Go's bcrypt) made for one of its API key secrets. */
Test(bcrypt, verifies_headscale_hashes)
{
    const char *hash = "$2a$10$/7lse68C.jHAOjhbfMjbsueH7SiF61QEa1Mv/Pi/ouaR6obt0Au4W";
    const char *secret = "FRwj25GkV_VRzOuQtkG521pShMdS9CY6j9G8S_ipyMotdgQ-_F45sqVR_hlQdV0o";
    char mine[HS_BCRYPT_LEN + 1];

    cr_assert(hs_bcrypt_is_hash(hash));
    cr_assert_eq(hs_bcrypt_verify(secret, strlen(secret), hash), 0);
    cr_assert_eq(hs_bcrypt_verify(secret, strlen(secret) - 1, hash), -EACCES);
    cr_assert_eq(hs_bcrypt_verify("x", 1, "$2a$10$short"), -EINVAL);
    cr_assert_not(hs_bcrypt_is_hash("0123abcd"));
    cr_assert_eq(hs_bcrypt_hash("abc", 3, mine), 0);
    cr_assert(hs_bcrypt_is_hash(mine));
    cr_assert_eq(hs_bcrypt_verify("abc", 3, mine), 0);
    cr_assert_eq(hs_bcrypt_verify("abd", 3, mine), -EACCES);
    cr_assert_eq(hs_bcrypt_verify("a\0c", 3, mine), -EACCES, "a NUL would cut the secret short");
}

Test(ids, sorted_set_keeps_order_and_reports_changes)
{
    struct hs_ids s = { 0 };
    uint64_t want[] = { 1, 5, 9, 40 };

    for (int i = 0; i < 100; i++) /* repeats, in a scrambled order, past several growths */
        hs_ids_set(&s, (uint64_t)((i * 37) % 50), true);
    cr_expect_eq(s.n, 50);
    for (size_t i = 1; i < s.n; i++)
        cr_assert_lt(s.v[i - 1], s.v[i]);
    cr_expect_not(hs_ids_set(&s, 7, true), "already there");
    cr_expect(hs_ids_set(&s, 7, false));
    cr_expect_not(hs_ids_set(&s, 7, false), "already gone");
    cr_expect_not(hs_ids_has(s.v, s.n, 7));
    cr_expect(hs_ids_has(s.v, s.n, 49));
    cr_expect_not(hs_ids_has(s.v, s.n, 50));
    cr_expect_eq(hs_ids_lower(s.v, s.n, 7), 7, "the gap 7 left: 8 is at index 7");
    hs_ids_free(&s);

    uint64_t v[] = { 9, 1, 40, 5, 9, 1, 1 };
    size_t n = hs_ids_sort_unique(v, 7);
    cr_assert_eq(n, 4);
    cr_expect_arr_eq(v, want, sizeof(want));
    cr_expect_eq(hs_ids_sort_unique(v, 0), 0);
    cr_expect_not(hs_ids_has(v, 0, 1), "an empty array holds nothing");
}
