/* util: logging, bounded buffers, string/number parsing, time, hex, JSON helpers.
 * Every other module may include this header; it depends only on libc, jansson, libsodium and
 * libcrypt. */
#ifndef HS_UTIL_H
#define HS_UTIL_H

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#define HS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- logging (OpenBSD split: *_warn adds strerror(errno), *_warnx does not) ---- */
enum log_level { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };
void log_set_level(enum log_level lvl);
void log_set_json(bool json);
enum log_level log_get_level(void);
bool log_get_json(void);
const char *log_level_name(enum log_level lvl); /* "trace" ... "disabled" */
/* Parses headscale's level names (trace, debug, info, warn, error, fatal, panic, disabled). */
int log_parse_level(const char *s, enum log_level *out);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_trace(...) log_msg(LOG_TRACE, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warnx(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_errorx(...) log_msg(LOG_ERROR, __VA_ARGS__)
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void log_fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* ---- hs_buf: owned, growable up to max (curl's dynbuf); always NUL-terminated ---- */
struct hs_buf {
    char *data;
    size_t len, cap, max;
    size_t skip; /* bytes consumed before data: the allocation starts at data - skip */
};
void hs_buf_init(struct hs_buf *b, size_t max);
void hs_buf_free(struct hs_buf *b);
void hs_buf_reset(struct hs_buf *b);
/* Append; -E2BIG past max, -ENOMEM. A failed append leaves the buffer unchanged. */
int hs_buf_append(struct hs_buf *b, const void *p, size_t n);
int hs_buf_puts(struct hs_buf *b, const char *s);
int hs_buf_appendf(struct hs_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Makes room for n more bytes (plus the NUL) without changing len; -E2BIG past max. */
int hs_buf_reserve(struct hs_buf *b, size_t n);
/* Cuts the contents back to their first len bytes (len <= b->len): undoes appends. */
void hs_buf_truncate(struct hs_buf *b, size_t len);
/* Drops the first n bytes. Amortised O(n): the rest moves to the front only when the
 * buffer needs room and at least as much was dropped as is left (a stream sending a
 * megabyte in 16 KiB frames would otherwise move it 64 times). */
void hs_buf_consume(struct hs_buf *b, size_t n);
/* When empty and holding more than keep bytes of capacity, gives the memory back: buffers of
 * long-lived connections must not keep the high-water mark of a burst. */
void hs_buf_trim(struct hs_buf *b, size_t keep);
/* Hands the data to the caller (free()) and resets b. Never NULL on success. */
char *hs_buf_steal(struct hs_buf *b);

/* ---- hs_str: borrowed slice ---- */
struct hs_str {
    const char *p;
    size_t len;
};

/* ---- string list (owned, NULL-terminated) ---- */
struct hs_strv {
    char **v;
    size_t n;
    size_t cap; /* slots in v, the terminator's included; 0 for a list built by hand */
};
int hs_strv_push(struct hs_strv *sv, const char *s);
void hs_strv_free(struct hs_strv *sv);
bool hs_strv_contains(const struct hs_strv *sv, const char *s);
/* The same strings in the same order. */
bool hs_strv_equal(const struct hs_strv *a, const struct hs_strv *b);
int hs_strv_copy(struct hs_strv *dst, const struct hs_strv *src);
/* Splits s on any char of seps, skipping empty parts. */
int hs_strv_split(struct hs_strv *sv, const char *s, const char *seps);

/* ---- id lists (owned) ---- */
struct hs_ids {
    uint64_t *v;
    size_t n, cap;
};
void hs_ids_push(struct hs_ids *s, uint64_t id); /* appends; order and repeats are the caller's */
void hs_ids_free(struct hs_ids *s);
/* Sorted set: adds (in true) or removes id keeping v ascending; whether it changed. */
bool hs_ids_set(struct hs_ids *s, uint64_t id, bool in);
/* On an ascending array: the first index whose id is >= id; whether id is there. */
size_t hs_ids_lower(const uint64_t *v, size_t n, uint64_t id);
bool hs_ids_has(const uint64_t *v, size_t n, uint64_t id);
/* Sorts v ascending and drops repeats; the new count. */
size_t hs_ids_sort_unique(uint64_t *v, size_t n);
/* qsort/bsearch comparator for uint64_t. */
int hs_u64_cmp(const void *a, const void *b);

/* ---- numbers, strings ---- */
/* Whole string must be a decimal number <= max. -EINVAL / -ERANGE. */
int hs_parse_u64(const char *s, uint64_t max, uint64_t *out);
int hs_parse_i64(const char *s, int64_t *out);
int hs_parse_bool(const char *s, bool *out); /* true/false/yes/no/on/off/1/0 */
char *hs_strdup(const char *s);               /* NULL-safe; aborts on ENOMEM */
char *hs_strndup(const char *s, size_t n);
void *hs_xmalloc(size_t n);                   /* aborts on ENOMEM */
void *hs_xcalloc(size_t n, size_t sz);
void *hs_xrealloc(void *p, size_t n);
char *hs_aprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool hs_streq(const char *a, const char *b); /* NULL-safe */
bool hs_has_prefix(const char *s, const char *prefix);
size_t hs_strlcpy(char *dst, const char *src, size_t size);

/* ---- UTF-8 ---- */
bool hs_utf8_valid(const char *s, size_t n);
/* Replaces every byte that is not part of a valid sequence with '?', in place. */
void hs_utf8_sanitize(char *s);

/* ---- hex ---- */
void hs_hex_encode(const uint8_t *in, size_t n, char *out /* 2n+1 */);
/* Decodes exactly 2n hex chars into n bytes; -EINVAL otherwise. */
int hs_hex_decode(const char *in, size_t inlen, uint8_t *out, size_t n);

/* ---- bcrypt (libcrypt): only for credentials brought over from a headscale database ---- */
#define HS_BCRYPT_LEN 60        /* "$2b$10$" + 22 salt + 31 hash chars */
#define HS_BCRYPT_MAX_SECRET 72 /* bcrypt ignores the rest */
bool hs_bcrypt_is_hash(const char *s); /* "$2a$"/"$2b$"/"$2y$" and 60 chars */
/* 0 when secret matches hash (constant-time compare); -EACCES when not; -EINVAL for a
 * malformed hash. */
int hs_bcrypt_verify(const char *secret, size_t len, const char *hash);
/* A new "$2b$10$..." hash of secret (random salt). -EINVAL for a secret bcrypt cannot take. */
int hs_bcrypt_hash(const char *secret, size_t len, char out[HS_BCRYPT_LEN + 1]);

/* ---- time: int64 microseconds since the Unix epoch; 0 means "unset" ---- */
#define HS_USEC_PER_SEC INT64_C(1000000)
/* The wall clock: for what is wall-clock by nature (key expiry, last seen, token times). It
 * may step forward or back at any moment. */
int64_t hs_now_us(void);
/* The monotonic clock: for every duration, timeout, interval and backoff, so that a step of
 * the wall clock neither fires them all at once nor stalls them. */
int64_t hs_monotonic_us(void);
/* A condition variable whose timed waits count on the monotonic clock. */
void hs_cond_init_monotonic(pthread_cond_t *c);
/* Waits on c (made by hs_cond_init_monotonic; mu held) until it is signalled or the monotonic
 * clock reaches at_us; true when the time came. Spurious wake-ups return false too. */
bool hs_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *mu, int64_t at_us);
/* Durations: Go style (1h30m, 800ms, 1.5h) plus d, w, y units (Prometheus style, 1d = 24h,
 * 1w = 7d, 1y = 365d). Bare "0" is 0. Negative values are refused. */
int hs_parse_duration(const char *s, int64_t *out_us);
/* RFC 3339 in UTC ("2006-01-02T15:04:05Z", fraction only when non-zero); buf >= 40. */
void hs_format_rfc3339(int64_t us, char *buf, size_t size);
/* Accepts RFC 3339 with optional fraction and Z or +hh:mm offset. */
int hs_parse_rfc3339(const char *s, int64_t *out_us);
/* headscale's human format "2006-01-02 15:04:05" (UTC). */
void hs_format_human(int64_t us, char *buf, size_t size);

/* ---- JSON ---- */
#define HS_JSON_MAX_BYTES (1u << 20)
/* Parses at most max bytes, rejecting duplicate keys; on failure writes a message to err. */
json_t *hs_json_load(const char *data, size_t len, size_t max, char *err, size_t errsize);
/* String member or NULL (also NULL when the member has another type). */
const char *hs_json_str(const json_t *obj, const char *key);
char *hs_json_dump(const json_t *j, size_t flags); /* malloc'd, aborts on ENOMEM */

/* ---- sockets ---- */
/* Writes what a non-blocking fd takes now: the bytes written (fewer than len when it would
 * block), or a negative errno when the socket is broken. */
ssize_t hs_write_nonblock(int fd, const void *data, size_t len);
/* TCP keep-alive timing that gives up a peer gone silent (its host or its network vanished
 * without a FIN or an RST) about timeout_us after it last answered: probes start after a
 * third of it, then every sixth, and data left unacknowledged that long ends the connection
 * too (TCP_USER_TIMEOUT). Whole seconds, at least 1 each. */
struct hs_keepalive {
    int idle_s, interval_s, count;
    unsigned user_timeout_ms;
};
void hs_keepalive_for(int64_t timeout_us, struct hs_keepalive *k);
/* Sets k on fd (sockets accepted from a listening fd inherit it); 0 or -errno. */
int hs_keepalive_set(int fd, const struct hs_keepalive *k);
/* "host:port", "[v6]:port" or ":port" → host ("" = any) and port (non-empty). */
int hs_split_host_port(const char *addr, char *host, size_t hostsize, char *port,
                       size_t portsize);

/* ---- files ---- */
/* Reads a whole file of at most max bytes; -E2BIG beyond. *out is NUL-terminated, caller frees. */
int hs_read_file(const char *path, size_t max, char **out, size_t *len);
/* Replaces path with data, atomically and durably: a temporary file with a random name in
 * path's directory (created exclusively: nothing planted there is opened or followed), mode
 * set before any byte is written, fsync, rename over path, fsync of the directory. 0 or
 * -errno; on failure before the rename nothing is left behind and path is unchanged (a failed
 * directory fsync after it means the new file is in place but may not survive a crash). */
int hs_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);
/* Whether other local users could replace or plant what sits at path (a socket, a key file):
 * every directory from / down to path's own is judged, the path as written and with symlinks
 * resolved. Returns the worst finding (reason in why), or -errno when a part cannot be
 * examined; parts that do not exist yet are not judged.
 *   HS_PATH_UNSAFE: a directory writable by every user without the sticky bit; an entry of a
 *     sticky directory that others can write, owned by a user other than root or us (whoever
 *     got there first owns it); with HS_PATH_STRICT_OWNER, a directory owned by such a user.
 *   HS_PATH_GROUP_WRITABLE: a directory writable by its group, without the sticky bit. */
enum hs_path_verdict { HS_PATH_SAFE, HS_PATH_GROUP_WRITABLE, HS_PATH_UNSAFE };
#define HS_PATH_STRICT_OWNER 1u
int hs_path_trust(const char *path, unsigned flags, char *why, size_t whysize);
int hs_mkdir_p(const char *path, unsigned mode);

const char *hs_strerror(int rc); /* rc is a negative errno */

#endif
