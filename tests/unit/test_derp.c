/* Tests for core/derp's DERP map: parsing (YAML and JSON), limits, merging of sources and
 * the refresh thread. URL sources use file:// URLs through libcurl. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <sodium.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "derp/derp.h"
#include "derp/derp_internal.h"
#include "derp/derp_server_internal.h"

#define DATA HS_SOURCE_DIR "/tests/unit/data/derp/"

static char err[256];

static json_t *parse_str(const char *text)
{
    err[0] = '\0';
    return derpmap_parse(text, strlen(text), err, sizeof(err));
}

static json_t *parse_file(const char *name)
{
    char *text;
    size_t len;
    json_t *m;

    cr_assert_eq(hs_read_file(name, DERPMAP_MAX_BYTES, &text, &len), 0, "%s", name);
    m = derpmap_parse(text, len, err, sizeof(err));
    free(text);
    return m;
}

static json_t *region(const json_t *map, const char *id)
{
    return json_object_get(json_object_get(map, "Regions"), id);
}

static json_t *node0(const json_t *map, const char *id)
{
    return json_array_get(json_object_get(region(map, id), "Nodes"), 0);
}

static json_int_t geti(const json_t *o, const char *k)
{
    cr_assert(json_is_integer(json_object_get(o, k)), "%s is not an integer", k);
    return json_integer_value(json_object_get(o, k));
}

static bool getb(const json_t *o, const char *k)
{
    cr_assert(json_is_boolean(json_object_get(o, k)), "%s is not a boolean", k);
    return json_is_true(json_object_get(o, k));
}

Test(derp_parse, headscale_yaml)
{
    json_t *m = parse_file(DATA "derp.yaml"), *n;

    cr_assert_not_null(m, "%s", err);
    cr_expect_eq(json_object_size(json_object_get(m, "Regions")), 2);
    cr_expect_eq(geti(region(m, "900"), "RegionID"), 900);
    cr_expect_str_eq(hs_json_str(region(m, "900"), "RegionCode"), "custom");
    cr_expect_str_eq(hs_json_str(region(m, "900"), "RegionName"), "My Region");
    n = node0(m, "900");
    cr_expect_str_eq(hs_json_str(n, "Name"), "900a");
    cr_expect_str_eq(hs_json_str(n, "HostName"), "myderp.example.com");
    cr_expect_str_eq(hs_json_str(n, "IPv4"), "123.123.123.123");
    cr_expect_str_eq(hs_json_str(n, "IPv6"), "2604:a880:400:d1::828:b001");
    cr_expect_eq(geti(n, "STUNPort"), 0);
    cr_expect_eq(geti(n, "DERPPort"), 0);
    cr_expect_not(getb(n, "STUNOnly"));
    cr_expect_not(getb(n, "InsecureForTests"));
    cr_expect_not(getb(n, "CanPort80"));

    /* RegionID missing: taken from the map key, for the region and its nodes. */
    cr_expect_eq(geti(region(m, "1"), "RegionID"), 1);
    n = node0(m, "1");
    cr_expect_eq(geti(n, "RegionID"), 1);
    cr_expect_eq(geti(n, "STUNPort"), -1);
    cr_expect(getb(n, "InsecureForTests"));
    cr_expect(getb(n, "CanPort80"));
    cr_expect_str_eq(hs_json_str(n, "IPv4"), ""); /* absent: resolve HostName */
    json_decref(m);
}

Test(derp_parse, go_json)
{
    json_t *m = parse_file(DATA "derp.json"), *n;

    cr_assert_not_null(m, "%s", err);
    cr_expect_eq(json_object_size(json_object_get(m, "Regions")), 3);
    cr_expect_str_eq(hs_json_str(region(m, "1"), "RegionCode"), "from-json");
    cr_expect(json_real_value(json_object_get(region(m, "1"), "Latitude")) == 40.5);
    n = node0(m, "1");
    cr_expect_str_eq(hs_json_str(n, "IPv6"), "none");
    cr_expect_eq(geti(n, "STUNPort"), 3478);
    cr_expect_eq(geti(n, "DERPPort"), 443);
    cr_expect(getb(n, "CanPort80"));
    cr_expect_eq(json_array_size(json_object_get(region(m, "3"), "Nodes")), 0);
    json_decref(m);
}

Test(derp_parse, output_has_only_go_names)
{
    json_t *m = parse_str("regions:\n  7:\n    regioncode: a\n    unknown: 1\n    nodes:\n"
                          "      - {name: 7a, hostname: h, bogus: x}\n");
    const char *k;
    json_t *v;
    static const char *const want[] = { "Name", "RegionID", "HostName", "IPv4", "IPv6",
                                        "STUNPort", "STUNOnly", "DERPPort", "InsecureForTests",
                                        "CanPort80" };

    cr_assert_not_null(m, "%s", err);
    cr_expect_eq(json_object_size(node0(m, "7")), HS_ARRAY_LEN(want));
    for (size_t i = 0; i < HS_ARRAY_LEN(want); i++)
        cr_expect_not_null(json_object_get(node0(m, "7"), want[i]), "%s", want[i]);
    json_object_foreach(region(m, "7"), k, v)
        cr_expect(strcmp(k, "unknown") != 0);
    json_decref(m);
}

struct bad_case {
    const char *text;
    const char *why; /* a fragment of the error message */
};

Test(derp_parse, malformed)
{
    static const struct bad_case cases[] = {
        { "regions: [1, 2", "" },
        { "regions:\n  900:\n    nodes: 5\n", "list" },
        { "regions:\n  abc:\n    regioncode: x\n", "positive integer" },
        { "regions:\n  0: {}\n", "positive integer" },
        { "regions:\n  1: 5\n", "mapping" },
        { "regions:\n  1:\n    nodes: [5]\n", "mapping" },
        { "regions:\n  1:\n    regionid: [1]\n", "wrong type" },
        { "regions:\n  1:\n    nodes:\n      - stunonly: maybe\n", "wrong type" },
        { "regions:\n  1:\n    nodes:\n      - derpport: 99999999999\n", "wrong type" },
        { "region:\n  1: {}\n", "regions" },
        { "regions: 5\n", "regions" },
        { "", "empty" },
        { "a: &x {b: 1}\nregions: *x\n", "alias" },
        { "regions:\n  1: {}\n  1: {}\n", "duplicate" },
        { "? [a]\n: b\n", "scalar" },
        { "regions: {}\n---\nregions: {}\n", "document" },
        { "{\"Regions\": {\"1\": {}, \"1\": {}}}", "" },
        { "{\"Regions\": ", "" },
        { "[1, 2]", "regions" },
    };

    for (size_t i = 0; i < HS_ARRAY_LEN(cases); i++) {
        json_t *m = parse_str(cases[i].text);
        cr_expect_null(m, "case %zu parsed", i);
        cr_expect(strstr(err, cases[i].why) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, err,
                  cases[i].why);
        json_decref(m);
    }
    json_decref(parse_file(DATA "bad-type.yaml"));
    cr_expect(strstr(err, "STUNPort") != NULL, "%s", err);
}

static char *repeat(const char *open, size_t n, const char *close)
{
    size_t lo = strlen(open), lc = strlen(close);
    char *s = malloc(n * (lo + lc) + 1), *p = s;

    for (size_t i = 0; i < n; i++, p += lo)
        memcpy(p, open, lo);
    for (size_t i = 0; i < n; i++, p += lc)
        memcpy(p, close, lc);
    *p = '\0';
    return s;
}

Test(derp_parse, depth_bomb)
{
    char *yaml = repeat("[", 100000, "]");
    char *json = repeat("{\"a\":", 100000, "}");

    cr_expect_null(parse_str(yaml));
    cr_expect(strstr(err, "too deep") != NULL, "%s", err);
    cr_expect_null(parse_str(json));
    free(yaml);
    free(json);
}

Test(derp_parse, oversized)
{
    size_t n = DERPMAP_MAX_BYTES + 1;
    char *big = malloc(n);
    json_t *m;

    memset(big, ' ', n);
    memcpy(big, "regions: {}", 11);
    cr_expect_null(derpmap_parse(big, n, err, sizeof(err)));
    cr_expect(strstr(err, "exceeds") != NULL, "%s", err);
    m = derpmap_parse(big, n - 1, err, sizeof(err)); /* at the cap: fine */
    cr_expect_not_null(m, "%s", err);
    json_decref(m);
    free(big);
}

Test(derp_parse, wide_documents_are_capped)
{
    /* 400k one-character items in one flow sequence: the item cap stops the tree early. */
    char *items = repeat("1,", 400000, "");
    char *doc = hs_aprintf("x: [%s1]", items);

    cr_expect_null(parse_str(doc));
    cr_expect(strstr(err, "too many") != NULL, "%s", err);
    free(items);
    free(doc);
}

/* Every prefix of a valid document parses or fails cleanly (ASan watches). */
Test(derp_parse, every_prefix)
{
    char *text;
    size_t len;

    cr_assert_eq(hs_read_file(DATA "derp.yaml", DERPMAP_MAX_BYTES, &text, &len), 0);
    for (size_t i = 0; i <= len; i++)
        json_decref(derpmap_parse(text, i, err, sizeof(err)));
    free(text);
    cr_assert_eq(hs_read_file(DATA "derp.json", DERPMAP_MAX_BYTES, &text, &len), 0);
    for (size_t i = 0; i <= len; i++)
        json_decref(derpmap_parse(text, i, err, sizeof(err)));
    free(text);
}

/* ---- sources, merge, refresh ---- */

static struct hs_config cfg;

static void cfg_reset(void)
{
    memset(&cfg, 0, sizeof(cfg));
}

static void cfg_fini(void)
{
    hs_strv_free(&cfg.derp_urls);
    hs_strv_free(&cfg.derp_paths);
}

TestSuite(derpmap, .init = cfg_reset, .fini = cfg_fini);

Test(derpmap, no_sources_is_empty)
{
    struct derpmap *dm;
    json_t *m;

    cr_assert_eq(derpmap_new(&cfg, &dm), 0);
    m = derpmap_get(dm);
    cr_expect_eq(json_object_size(json_object_get(m, "Regions")), 0);
    json_decref(m);
    cr_expect_eq(derpmap_start(dm), 0); /* nothing to refresh: no thread */
    derpmap_free(dm);
    m = derpmap_get(NULL);
    cr_expect(json_is_object(json_object_get(m, "Regions")));
    json_decref(m);
}

Test(derpmap, later_sources_win)
{
    struct derpmap *dm;
    json_t *m;

    hs_strv_push(&cfg.derp_urls, "file://" DATA "derp.json");
    hs_strv_push(&cfg.derp_paths, DATA "derp.yaml");
    hs_strv_push(&cfg.derp_paths, DATA "remove-3.yaml");
    cr_assert_eq(derpmap_new(&cfg, &dm), 0);
    m = derpmap_get(dm);
    cr_expect_str_eq(hs_json_str(region(m, "1"), "RegionCode"), "nyc"); /* path over url */
    cr_expect_str_eq(hs_json_str(region(m, "2"), "RegionCode"), "two");
    cr_expect_null(region(m, "3"), "a null region removes it");
    cr_expect_not_null(region(m, "900"));
    cr_expect_eq(json_object_size(json_object_get(m, "Regions")), 3);
    json_decref(m);
    derpmap_free(dm);
}

Test(derpmap, relative_paths_use_the_config_dir)
{
    struct derpmap *dm;
    json_t *m;

    cfg.dir = DATA;
    hs_strv_push(&cfg.derp_paths, "derp.yaml");
    cr_assert_eq(derpmap_new(&cfg, &dm), 0);
    m = derpmap_get(dm);
    cr_expect_not_null(region(m, "900"));
    json_decref(m);
    derpmap_free(dm);
}

Test(derpmap, failing_sources)
{
    struct derpmap *dm;
    json_t *m;

    hs_strv_push(&cfg.derp_paths, DATA "no-such-file.yaml");
    hs_strv_push(&cfg.derp_urls, "file://" DATA "bad-type.yaml");
    cr_assert_eq(derpmap_new(&cfg, &dm), 0, "nothing loads: logged, not fatal");
    m = derpmap_get(dm);
    cr_expect_eq(json_object_size(json_object_get(m, "Regions")), 0);
    json_decref(m);
    derpmap_free(dm);

    hs_strv_push(&cfg.derp_paths, DATA "derp.json");
    cr_assert_eq(derpmap_new(&cfg, &dm), 0, "one good source is enough");
    m = derpmap_get(dm);
    cr_expect_eq(json_object_size(json_object_get(m, "Regions")), 3);
    json_decref(m);
    derpmap_free(dm);
}

Test(derpmap, oversized_url_body)
{
    char path[] = "/tmp/hs-derp-big-XXXXXX";
    int fd = mkstemp(path);
    struct hs_buf b;
    char url[64];
    size_t n = DERPMAP_MAX_BYTES + 1;
    char *big = malloc(n);

    cr_assert_geq(fd, 0);
    memset(big, ' ', n);
    cr_assert_eq(write(fd, big, n), (ssize_t)n);
    close(fd);
    snprintf(url, sizeof(url), "file://%s", path);
    cr_expect_eq(derp__fetch_url(url, NULL, &b, err, sizeof(err)), -E2BIG, "%s", err);
    cr_expect_eq(derp__fetch_url("file:///nonexistent/derp.json", NULL, &b, err, sizeof(err)),
                 -EIO);
    cr_expect_eq(derp__fetch_url("gopher://example.com/", NULL, &b, err, sizeof(err)), -EIO);
    unlink(path);
    free(big);
}

static pthread_mutex_t chg_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t chg_cv = PTHREAD_COND_INITIALIZER;
static int changes;

static void on_change(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&chg_mu);
    changes++;
    pthread_cond_broadcast(&chg_cv);
    pthread_mutex_unlock(&chg_mu);
}

static void wait_for_change(int want)
{
    int64_t t0 = hs_monotonic_us();

    pthread_mutex_lock(&chg_mu);
    while (changes < want && hs_monotonic_us() - t0 < 5 * HS_USEC_PER_SEC) {
        pthread_mutex_unlock(&chg_mu);
        usleep(10000);
        pthread_mutex_lock(&chg_mu);
    }
    pthread_mutex_unlock(&chg_mu);
    cr_assert_eq(changes, want);
}

/* A DERP map started on cfg whose changes are counted in `changes`. */
static struct derpmap *start_counted(void)
{
    struct derpmap *dm;

    cr_assert_eq(derpmap_new(&cfg, &dm), 0);
    derpmap_set_listener(dm, on_change, NULL);
    cr_assert_eq(derpmap_start(dm), 0);
    return dm;
}

static void expect_region_code(struct derpmap *dm, const char *id, const char *want)
{
    json_t *m = derpmap_get(dm);

    cr_expect_str_eq(hs_json_str(region(m, id), "RegionCode"), want);
    json_decref(m);
}

static void write_text(const char *path, const char *text)
{
    cr_assert_eq(hs_write_file_atomic(path, text, strlen(text), 0600), 0);
}

Test(derpmap, refresh_picks_up_changes_and_stops_promptly)
{
    char dir[] = "/tmp/hs-derp-XXXXXX", path[64], url[80];
    struct derpmap *dm;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/map.json", dir);
    snprintf(url, sizeof(url), "file://%s", path);
    write_text(path, "{\"Regions\":{\"5\":{\"RegionCode\":\"old\"}}}");
    hs_strv_push(&cfg.derp_urls, url);
    cfg.derp_auto_update = true;
    cfg.derp_update_frequency_us = 50000;
    dm = start_counted();
    write_text(path, "{\"Regions\":{\"5\":{\"RegionCode\":\"new\"}}}");

    wait_for_change(1);
    expect_region_code(dm, "5", "new");

    /* A broken update keeps the last good regions. */
    write_text(path, "{\"Regions\": 5}");
    usleep(200000);
    expect_region_code(dm, "5", "new");
    cr_expect_eq(changes, 1);

    derpmap_free(dm);
    unlink(path);
    rmdir(dir);
}

/* SIGHUP: new sources replace the old only when all of them load; the refresher, running
 * with auto-update, goes on with the new ones. */
Test(derpmap, reload_swaps_sources_or_keeps_them)
{
    char dir[] = "/tmp/hs-derp-XXXXXX", a[64], b[64], url[80];
    struct hs_config next = { 0 };
    struct derpmap *dm;
    json_t *m;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(a, sizeof(a), "%s/a.json", dir);
    snprintf(b, sizeof(b), "%s/b.json", dir);
    write_text(a, "{\"Regions\":{\"5\":{\"RegionCode\":\"a\"}}}");
    write_text(b, "{\"Regions\":{\"6\":{\"RegionCode\":\"b\"}}}");
    snprintf(url, sizeof(url), "file://%s", a);
    hs_strv_push(&cfg.derp_urls, url);
    cfg.derp_auto_update = true;
    cfg.derp_update_frequency_us = 20000;
    dm = start_counted();

    hs_strv_push(&next.derp_paths, b);
    hs_strv_push(&next.derp_paths, DATA "no-such-file.yaml");
    next.derp_auto_update = true;
    next.derp_update_frequency_us = 20000;
    cr_expect_eq(derpmap_reload(dm, &next, NULL, err, sizeof(err)), -EINVAL);
    cr_expect(strstr(err, "no-such-file.yaml") != NULL, "%s", err);
    expect_region_code(dm, "5", "a");

    hs_strv_free(&next.derp_paths);
    hs_strv_push(&next.derp_paths, b);
    cr_assert_eq(derpmap_reload(dm, &next, json_pack("{s:i, s:s}", "RegionID", 999,
                                                      "RegionCode", "embedded"),
                                err, sizeof(err)), 0, "%s", err);
    m = derpmap_get(dm);
    cr_expect_null(region(m, "5"), "the old source is gone");
    cr_expect_eq(json_object_size(json_object_get(m, "Regions")), 2);
    json_decref(m);
    expect_region_code(dm, "999", "embedded");
    write_text(b, "{\"Regions\":{\"6\":{\"RegionCode\":\"b2\"}}}");
    wait_for_change(1);
    expect_region_code(dm, "6", "b2");

    derpmap_free(dm);
    hs_strv_free(&next.derp_paths);
    unlink(a);
    unlink(b);
    rmdir(dir);
}

/* A source missing at start is tried again, without auto-update too, until it loads. */
Test(derpmap, source_missing_at_start_is_retried)
{
    char dir[] = "/tmp/hs-derp-XXXXXX", path[64];
    struct derpmap *dm;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/map.json", dir);
    hs_strv_push(&cfg.derp_paths, path);
    cfg.derp_auto_update = false;
    cfg.derp_update_frequency_us = 50000; /* caps the backoff, so the test need not wait 5 s */
    dm = start_counted();
    usleep(120000);
    cr_expect_eq(changes, 0, "still missing: nothing changed");
    write_text(path, "{\"Regions\":{\"7\":{\"RegionCode\":\"late\"}}}");
    wait_for_change(1);
    expect_region_code(dm, "7", "late");

    /* Loaded once and no auto-update: later edits are not picked up. */
    write_text(path, "{\"Regions\":{\"7\":{\"RegionCode\":\"later\"}}}");
    usleep(200000);
    expect_region_code(dm, "7", "late");
    derpmap_free(dm);
    unlink(path);
    rmdir(dir);
}

Test(derpmap, free_does_not_wait_for_the_period)
{
    struct derpmap *dm;
    int64_t t0;

    hs_strv_push(&cfg.derp_urls, "file://" DATA "derp.json");
    cfg.derp_auto_update = true;
    cfg.derp_update_frequency_us = 3600 * HS_USEC_PER_SEC;
    cr_assert_eq(derpmap_new(&cfg, &dm), 0);
    cr_assert_eq(derpmap_start(dm), 0);
    usleep(20000);
    t0 = hs_monotonic_us();
    derpmap_free(dm);
    cr_expect_lt(hs_monotonic_us() - t0, HS_USEC_PER_SEC / 2);
}

/* ---- relay framing and STUN ---- */

Test(derp_frame, parse_bounds)
{
    uint8_t buf[16] = { DERP_FRAME_SEND_PACKET, 0, 0, 0, 3, 'a', 'b', 'c', 0x12 };
    struct derp_frame f;

    cr_assert_eq(derp_frame_parse(buf, 4, 100, &f), -EAGAIN);
    cr_assert_eq(derp_frame_parse(buf, 7, 100, &f), -EAGAIN);
    cr_assert_eq(derp_frame_parse(buf, 9, 100, &f), 8);
    cr_assert_eq(f.type, DERP_FRAME_SEND_PACKET);
    cr_assert_eq(f.len, 3);
    cr_assert(memcmp(f.payload, "abc", 3) == 0);
    cr_assert_eq(derp_frame_parse(buf, 9, 2, &f), -E2BIG, "over the limit before the bytes");
    buf[1] = 0xff;
    cr_assert_eq(derp_frame_parse(buf, 5, DERP_MAX_FRAME, &f), -E2BIG);
}

static size_t stun_request(uint8_t *req)
{
    static const uint8_t hdr[20] = { 0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42,
                                     1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
    memcpy(req, hdr, sizeof(hdr));
    return sizeof(hdr);
}

Test(stun, ipv4_xor_mapped_address)
{
    struct sockaddr_storage ss = { 0 };
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    uint8_t req[64], resp[64];
    size_t n = stun_request(req);
    ssize_t r;

    sin->sin_family = AF_INET;
    sin->sin_port = htons(41641);
    inet_pton(AF_INET, "198.18.0.7", &sin->sin_addr);
    r = stun_answer(req, n, &ss, resp, sizeof(resp));
    cr_assert_eq(r, 32);
    cr_assert_eq(resp[0], 0x01);
    cr_assert_eq(resp[1], 0x01);
    cr_assert(memcmp(resp + 8, req + 8, 12) == 0, "transaction id echoed");
    cr_assert_eq(((resp[26] << 8) | resp[27]) ^ 0x2112, 41641);
    cr_assert_eq(resp[28] ^ 0x21, 198);
    cr_assert_eq(resp[31] ^ 0x42, 7);
}

Test(stun, rejects_non_requests)
{
    struct sockaddr_storage ss = { .ss_family = AF_INET };
    uint8_t req[64], resp[64];
    size_t n = stun_request(req);

    cr_assert_eq(stun_answer(req, 19, &ss, resp, sizeof(resp)), -EINVAL, "short");
    req[1] = 0x02;
    cr_assert_eq(stun_answer(req, n, &ss, resp, sizeof(resp)), -EINVAL, "not a binding request");
    req[1] = 0x01;
    req[4] = 0;
    cr_assert_eq(stun_answer(req, n, &ss, resp, sizeof(resp)), -EINVAL, "bad cookie");
    req[4] = 0x21;
    req[3] = 8;
    cr_assert_eq(stun_answer(req, n, &ss, resp, sizeof(resp)), -EINVAL, "length past the end");
}

/* derp.server.region_*, ipv4, ipv6 and stun_listen_addr as the embedded region shows them. */
Test(derpmap, embedded_region_from_the_config)
{
    struct hs_config c = {
        .server_url = "https://hs.example.com:8443", .derp_server_region_id = 901,
        .derp_server_region_code = "ams", .derp_server_region_name = "Amsterdam",
        .derp_server_stun_listen_addr = "0.0.0.0:3479", .derp_server_ipv4 = "198.18.0.7",
        .derp_server_ipv6 = "2001:db8::7",
    };
    json_t *r = derp_server_region(NULL, &c), *n = json_array_get(json_object_get(r, "Nodes"), 0);

    cr_expect_eq(json_integer_value(json_object_get(r, "RegionID")), 901);
    cr_expect_str_eq(hs_json_str(r, "RegionCode"), "ams");
    cr_expect_str_eq(hs_json_str(r, "RegionName"), "Amsterdam");
    cr_expect_str_eq(hs_json_str(n, "HostName"), "hs.example.com");
    cr_expect_eq(json_integer_value(json_object_get(n, "DERPPort")), 8443);
    cr_expect_eq(json_integer_value(json_object_get(n, "STUNPort")), 3479);
    cr_expect_str_eq(hs_json_str(n, "IPv4"), "198.18.0.7");
    cr_expect_str_eq(hs_json_str(n, "IPv6"), "2001:db8::7");
    json_decref(r);
}

/* ---- the DERP mesh: route table, mesh key, mesh_with entries ---- */

static void fill_key(uint8_t key[DERP_KEY_LEN], uint8_t v)
{
    memset(key, v, DERP_KEY_LEN);
}

static int gone_count;
static uint8_t gone_last[DERP_KEY_LEN];

static void count_gone(void *arg, const uint8_t key[DERP_KEY_LEN])
{
    (void)arg;
    gone_count++;
    memcpy(gone_last, key, DERP_KEY_LEN);
}

/* A key on two servers goes to the one that announced it first, until that one drops it. */
Test(derp_mesh, routes_first_announcer_wins)
{
    struct mesh_routes t = { 0 };
    uint8_t k[DERP_KEY_LEN], other[DERP_KEY_LEN];

    fill_key(k, 7);
    fill_key(other, 8);
    cr_assert_eq(derp__route_lookup(&t, k), -1);
    cr_assert_eq(derp__route_add(&t, k, 3), 0);
    cr_assert_eq(derp__route_add(&t, k, 1), 0);
    cr_assert_eq(derp__route_add(&t, k, 3), 1, "a repeated PeerPresent changes nothing");
    cr_assert_eq(derp__route_lookup(&t, k), 3);
    cr_assert_eq(t.n, 1);
    cr_assert_not(derp__route_remove(&t, other, 3), "unknown key: nothing to forget");
    cr_assert_not(derp__route_remove(&t, k, 5), "a peer that never had it");
    cr_assert_not(derp__route_remove(&t, k, 3), "still on peer 1");
    cr_assert_eq(derp__route_lookup(&t, k), 1);
    cr_assert(derp__route_remove(&t, k, 1), "gone from the region");
    cr_assert_eq(derp__route_lookup(&t, k), -1);
    cr_assert_eq(t.n, 0);
    derp__routes_free(&t);
}

Test(derp_mesh, routes_per_key_list_is_bounded)
{
    struct mesh_routes t = { 0 };
    uint8_t k[DERP_KEY_LEN];

    fill_key(k, 1);
    for (uint8_t i = 0; i < DERP_MESH_MAX_VIA; i++)
        cr_assert_eq(derp__route_add(&t, k, i), 0);
    cr_assert_eq(derp__route_add(&t, k, DERP_MESH_MAX_VIA), -E2BIG);
    cr_assert_eq(derp__route_lookup(&t, k), 0);
    derp__routes_free(&t);
}

/* A broken link forgets what the peer announced; keys still held elsewhere stay. */
Test(derp_mesh, routes_dropped_with_their_peer)
{
    struct mesh_routes t = { 0 };
    uint8_t a[DERP_KEY_LEN], b[DERP_KEY_LEN], c[DERP_KEY_LEN];

    fill_key(a, 1);
    fill_key(b, 2);
    fill_key(c, 3);
    derp__route_add(&t, a, 0);
    derp__route_add(&t, b, 0);
    derp__route_add(&t, b, 1);
    derp__route_add(&t, c, 1);
    gone_count = 0;
    derp__route_drop_peer(&t, 0, count_gone, NULL);
    cr_assert_eq(gone_count, 1, "only a left the region");
    cr_assert_eq(memcmp(gone_last, a, DERP_KEY_LEN), 0);
    cr_assert_eq(derp__route_lookup(&t, b), 1);
    cr_assert_eq(derp__route_lookup(&t, c), 1);
    cr_assert_eq(t.n, 2);
    derp__routes_free(&t);
    cr_assert_eq(t.n, 0);
}

/* derper's --mesh-psk-file format. */
Test(derp_mesh, mesh_key_file_format)
{
    static const char hex[] = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    char text[128];
    uint8_t k[DERP_KEY_LEN];

    snprintf(text, sizeof(text), "  %s\n", hex);
    cr_assert_eq(derp__mesh_parse_key(text, strlen(text), k), 0);
    cr_assert_eq(k[1], 0x11);
    cr_assert_eq(k[31], 0xff);
    cr_assert_eq(derp__mesh_parse_key(hex, 63, k), -EINVAL, "63 digits");
    snprintf(text, sizeof(text), "%s0", hex);
    cr_assert_eq(derp__mesh_parse_key(text, strlen(text), k), -EINVAL, "65 digits");
    snprintf(text, sizeof(text), "%s", hex);
    text[10] = 'g';
    cr_assert_eq(derp__mesh_parse_key(text, strlen(text), k), -EINVAL, "not hex");
    memset(text, '0', 64);
    cr_assert_eq(derp__mesh_parse_key(text, 64, k), -EINVAL, "zero is derper's 'no key'");
    cr_assert_eq(derp__mesh_parse_key("", 0, k), -EINVAL);
}

Test(derp_mesh, mesh_with_entries)
{
    struct config_mesh_peer m;
    const char *why;

    cr_assert_eq(config_mesh_peer_split("10.0.0.2:8080", &m, &why), 0);
    cr_assert_str_eq(m.host, "10.0.0.2");
    cr_assert_str_eq(m.port, "8080");
    cr_assert_str_eq(m.path, "/derp");
    cr_assert_not(m.tls);
    cr_assert_eq(config_mesh_peer_split("http://replica-2", &m, &why), 0);
    cr_assert_str_eq(m.host, "replica-2");
    cr_assert_str_eq(m.port, "80");
    cr_assert_eq(config_mesh_peer_split("http://[fd00::2]:81/relay/derp", &m, &why), 0);
    cr_assert_str_eq(m.host, "fd00::2");
    cr_assert_str_eq(m.port, "81");
    cr_assert_str_eq(m.path, "/relay/derp");
    cr_assert_eq(config_mesh_peer_split("http://[fd00::2]", &m, &why), 0);
    cr_assert_str_eq(m.port, "80");
    cr_assert_eq(config_mesh_peer_split("https://derp.example.com", &m, &why), 0);
    cr_assert(m.tls);
    cr_assert_str_eq(m.host, "derp.example.com");
    cr_assert_str_eq(m.port, "443");
    static const char *bad[] = { "r2", "r2:", ":8080", "r2:0", "r2:65536", "r2:80x",
                                 "ftp://r2:21", "r2:80/derp", "http://", "https://:443",
                                 "http://r2:80/d?x=1", "http://u@r2:80", "http://r 2:80", "" };
    for (size_t i = 0; i < HS_ARRAY_LEN(bad); i++) {
        cr_assert_eq(config_mesh_peer_split(bad[i], &m, &why), -EINVAL, "%s", bad[i]);
        cr_assert(strstr(why, "host:port"));
    }
}

/* ---- the mesh over real sockets: our relay thread on one side, a raw DERP speaker here ---- */

#define MESH_HEX "5555555555555555555555555555555555555555555555555555555555555555"
#define IO_MS 5000

struct raw {
    int fd;
    uint8_t pub[DERP_KEY_LEN], priv[DERP_KEY_LEN], server[DERP_KEY_LEN];
    uint8_t buf[DERP_RX_SIZE];
    size_t len;
};

static struct hs_config mcfg;
static char mdir[64];
static struct derp_server *msrv;

/* Reads until one whole frame is buffered → its type, payload copied into out. -1 on EOF. */
static int raw_frame(struct raw *r, uint8_t *out, size_t *outlen, int ms)
{
    struct derp_frame f;
    ssize_t n;

    while ((n = derp_frame_parse(r->buf, r->len, DERP_MAX_FRAME, &f)) == -EAGAIN) {
        struct pollfd p = { .fd = r->fd, .events = POLLIN };
        if (poll(&p, 1, ms) <= 0)
            return -2;
        if ((n = read(r->fd, r->buf + r->len, sizeof(r->buf) - r->len)) <= 0)
            return -1;
        r->len += (size_t)n;
    }
    cr_assert_geq(n, 0);
    memcpy(out, f.payload, f.len);
    *outlen = f.len;
    int type = f.type;
    memmove(r->buf, r->buf + n, r->len - (size_t)n);
    r->len -= (size_t)n;
    return type;
}

/* The next frame of type want, skipping keep-alives. */
static size_t raw_expect(struct raw *r, int want, uint8_t *out)
{
    size_t len = 0;
    int type;

    while ((type = raw_frame(r, out, &len, IO_MS)) == DERP_FRAME_KEEP_ALIVE)
        ;
    cr_assert_eq(type, want, "frame 0x%02x, expected 0x%02x", type, want);
    return len;
}

static void raw_send(struct raw *r, uint8_t type, const void *a, size_t alen, const void *b,
                     size_t blen)
{
    size_t len = alen + blen;
    uint8_t *frame = hs_xmalloc(DERP_HDR_LEN + len + 1);

    /* One write: once the frame is whole the relay may act on it and close the socket, and
     * a write after that would be a write to a closed socket. */
    frame[0] = type;
    frame[1] = (uint8_t)(len >> 24);
    frame[2] = (uint8_t)(len >> 16);
    frame[3] = (uint8_t)(len >> 8);
    frame[4] = (uint8_t)len;
    if (alen)
        memcpy(frame + DERP_HDR_LEN, a, alen);
    if (blen)
        memcpy(frame + DERP_HDR_LEN + alen, b, blen);
    cr_assert_eq(write(r->fd, frame, DERP_HDR_LEN + len), (ssize_t)(DERP_HDR_LEN + len));
    free(frame);
}

static bool raw_closed(struct raw *r)
{
    uint8_t tmp[DERP_RX_SIZE];
    size_t len;
    int type;

    while ((type = raw_frame(r, tmp, &len, IO_MS)) >= 0)
        ;
    return type == -1;
}

static void raw_client_info(struct raw *r, const char *json)
{
    uint8_t sealed[DERP_NONCE_LEN + 256 + crypto_box_MACBYTES];

    randombytes_buf(sealed, DERP_NONCE_LEN);
    cr_assert_eq(crypto_box_easy(sealed + DERP_NONCE_LEN, (const uint8_t *)json, strlen(json),
                                 sealed, r->server, r->priv), 0);
    raw_send(r, DERP_FRAME_CLIENT_INFO, r->pub, DERP_KEY_LEN, sealed,
             DERP_NONCE_LEN + strlen(json) + crypto_box_MACBYTES);
}

/* A client of msrv over a socketpair; meshkey NULL for a plain client. Returns after
 * ServerInfo unless expect_refusal. */
static void raw_connect(struct raw *r, const char *meshkey, bool expect_refusal)
{
    int sv[2];
    uint8_t p[DERP_RX_SIZE];
    char json[160];

    memset(r, 0, sizeof(*r));
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    derp_server_adopt(msrv, net_conn_new(sv[0], NULL), NULL);
    r->fd = sv[1];
    cr_assert_eq(raw_expect(r, DERP_FRAME_SERVER_KEY, p), 8 + DERP_KEY_LEN);
    memcpy(r->server, p + 8, DERP_KEY_LEN);
    crypto_box_keypair(r->pub, r->priv);
    if (meshkey)
        snprintf(json, sizeof(json), "{\"version\":2,\"meshKey\":\"%s\"}", meshkey);
    else
        snprintf(json, sizeof(json), "{\"version\":2}");
    raw_client_info(r, json);
    if (expect_refusal)
        cr_assert(raw_closed(r), "ClientInfo should have been refused");
    else
        raw_expect(r, DERP_FRAME_SERVER_INFO, p);
}

static void mesh_setup(const char *mesh_with)
{
    char path[96];
    FILE *f;

    /* The relay runs in this process and writes to sockets the test closes: as in the
     * server (server_run), that is an EPIPE to handle, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    snprintf(mdir, sizeof(mdir), "/tmp/hs-derp-mesh-XXXXXX");
    cr_assert_not_null(mkdtemp(mdir));
    snprintf(path, sizeof(path), "%s/mesh.key", mdir);
    cr_assert_not_null(f = fopen(path, "w"));
    fprintf(f, "%s\n", MESH_HEX);
    fclose(f);
    mcfg = (struct hs_config){ .derp_server_region_code = "t" };
    mcfg.derp_server_mesh_key_path = hs_strdup(path);
    snprintf(path, sizeof(path), "%s/derp.key", mdir);
    mcfg.derp_server_private_key_path = hs_strdup(path);
    if (mesh_with)
        hs_strv_push(&mcfg.derp_server_mesh_with, mesh_with);
    cr_assert_eq(derp_server_new(&mcfg, &msrv), 0);
    cr_assert_eq(derp_server_start(msrv), 0);
}

static void mesh_teardown(void)
{
    char cmd[96];

    derp_server_free(msrv);
    msrv = NULL;
    free(mcfg.derp_server_mesh_key_path);
    free(mcfg.derp_server_private_key_path);
    hs_strv_free(&mcfg.derp_server_mesh_with);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", mdir);
    cr_assert_eq(system(cmd), 0);
}

/* Expects PeerPresent frames (any order) for the n keys given. */
static void expect_present(struct raw *w, const uint8_t *keys[], const uint8_t flags[], size_t n)
{
    bool seen[8] = { 0 };
    uint8_t p[DERP_RX_SIZE];

    for (size_t got = 0; got < n; got++) {
        cr_assert_eq(raw_expect(w, DERP_FRAME_PEER_PRESENT, p), DERP_PEER_PRESENT_LEN);
        size_t i = 0;
        while (i < n && memcmp(p, keys[i], DERP_KEY_LEN) != 0)
            i++;
        cr_assert_lt(i, n, "PeerPresent for a key nobody connected");
        cr_assert_not(seen[i]);
        cr_assert_eq(p[DERP_PEER_PRESENT_LEN - 1], flags[i]);
        seen[i] = true;
    }
}

Test(derp_mesh, server_side_watch_forward_close)
{
    struct raw x, m, y;
    uint8_t p[DERP_RX_SIZE], src[DERP_KEY_LEN], msg[DERP_KEY_LEN * 2];
    size_t len;

    mesh_setup(NULL);
    raw_connect(&x, NULL, false);
    raw_connect(&m, MESH_HEX, false);
    raw_send(&m, DERP_FRAME_WATCH_CONNS, NULL, 0, NULL, 0);
    expect_present(&m, (const uint8_t *[]){ x.pub, m.pub },
                   (const uint8_t[]){ DERP_PRESENT_REGULAR, DERP_PRESENT_MESH_PEER }, 2);
    raw_connect(&y, NULL, false);
    expect_present(&m, (const uint8_t *[]){ y.pub }, (const uint8_t[]){ DERP_PRESENT_REGULAR }, 1);

    /* ForwardPacket: delivered to the local client with the original source key. */
    fill_key(src, 0x42);
    memcpy(msg, src, DERP_KEY_LEN);
    memcpy(msg + DERP_KEY_LEN, x.pub, DERP_KEY_LEN);
    raw_send(&m, DERP_FRAME_FORWARD_PACKET, msg, sizeof(msg), "hello", 5);
    len = raw_expect(&x, DERP_FRAME_RECV_PACKET, p);
    cr_assert_eq(len, DERP_KEY_LEN + 5);
    cr_assert_eq(memcmp(p, src, DERP_KEY_LEN), 0);
    cr_assert_eq(memcmp(p + DERP_KEY_LEN, "hello", 5), 0);

    /* A leaving client is announced... */
    close(y.fd);
    len = raw_expect(&m, DERP_FRAME_PEER_GONE, p);
    cr_assert_eq(len, DERP_KEY_LEN + 1);
    cr_assert_eq(memcmp(p, y.pub, DERP_KEY_LEN), 0);
    cr_assert_eq(p[DERP_KEY_LEN], 0);
    /* ...and a forward to a key not here answers NotHere. */
    memcpy(msg + DERP_KEY_LEN, y.pub, DERP_KEY_LEN);
    raw_send(&m, DERP_FRAME_FORWARD_PACKET, msg, sizeof(msg), "x", 1);
    raw_expect(&m, DERP_FRAME_PEER_GONE, p);
    cr_assert_eq(p[DERP_KEY_LEN], 1);

    /* ClosePeer: the server drops that client. */
    raw_send(&m, DERP_FRAME_CLOSE_PEER, x.pub, DERP_KEY_LEN, NULL, 0);
    cr_assert(raw_closed(&x));
    close(x.fd);
    close(m.fd);
    mesh_teardown();
}

Test(derp_mesh, server_side_refuses_without_the_key)
{
    struct raw w, b, f;
    uint8_t msg[2 * DERP_KEY_LEN] = { 0 };

    mesh_setup(NULL);
    /* A well-formed but wrong key makes a plain client, which may not watch... */
    raw_connect(&w, "6666666666666666666666666666666666666666666666666666666666666666", false);
    raw_send(&w, DERP_FRAME_WATCH_CONNS, NULL, 0, NULL, 0);
    cr_assert(raw_closed(&w));
    /* ...nor forward... */
    raw_connect(&f, NULL, false);
    raw_send(&f, DERP_FRAME_FORWARD_PACKET, msg, sizeof(msg), "x", 1);
    cr_assert(raw_closed(&f));
    /* ...and a malformed one is no ClientInfo at all, as in derper. */
    raw_connect(&b, "55", true);
    close(w.fd);
    close(f.fd);
    close(b.fd);
    mesh_teardown();
}

/* ---- our mesh client, against a peer played here ---- */

static int listen_local(int *port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 4), 0);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Accepts the relay's mesh connection and answers as a DERP server with key pair (pub, priv):
 * checks the upgrade request and the ClientInfo (our mesh key), then WatchConns. */
static void accept_mesh(int lfd, struct raw *peer, const uint8_t pub[DERP_KEY_LEN])
{
    static const char ok[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n"
                             "Connection: Upgrade\r\n\r\n";
    struct pollfd pf = { .fd = lfd, .events = POLLIN };
    char head[2048] = { 0 };
    size_t hl = 0;
    uint8_t sk[8 + DERP_KEY_LEN] = { 'D', 'E', 'R', 'P', 0xf0, 0x9f, 0x94, 0x91 };

    cr_assert_eq(poll(&pf, 1, IO_MS), 1, "the relay did not dial its mesh peer");
    peer->fd = accept(lfd, NULL, NULL);
    peer->len = 0;
    while (!strstr(head, "\r\n\r\n")) {
        struct pollfd q = { .fd = peer->fd, .events = POLLIN };
        ssize_t n;
        cr_assert_eq(poll(&q, 1, IO_MS), 1);
        cr_assert_gt(n = read(peer->fd, head + hl, sizeof(head) - 1 - hl), 0);
        hl += (size_t)n;
    }
    cr_assert(hs_has_prefix(head, "GET /derp HTTP/1.1\r\n"), "%s", head);
    cr_assert_not_null(strstr(head, "Upgrade: DERP\r\n"));
    memcpy(sk + 8, pub, DERP_KEY_LEN);
    cr_assert_eq(write(peer->fd, ok, sizeof(ok) - 1), (ssize_t)sizeof(ok) - 1);
    raw_send(peer, DERP_FRAME_SERVER_KEY, sk, sizeof(sk), NULL, 0);
}

static void expect_client_info(struct raw *peer, const uint8_t priv[DERP_KEY_LEN])
{
    uint8_t p[DERP_RX_SIZE], msg[512];
    size_t len = raw_expect(peer, DERP_FRAME_CLIENT_INFO, p);
    size_t mlen = len - DERP_KEY_LEN - DERP_NONCE_LEN - crypto_box_MACBYTES;
    json_t *info;

    cr_assert_lt(mlen, sizeof(msg));
    cr_assert_eq(crypto_box_open_easy(msg, p + DERP_KEY_LEN + DERP_NONCE_LEN,
                                      len - DERP_KEY_LEN - DERP_NONCE_LEN, p + DERP_KEY_LEN, p,
                                      priv), 0);
    memcpy(peer->server, p, DERP_KEY_LEN); /* the relay's key: its mesh client's identity */
    info = json_loadb((const char *)msg, mlen, 0, NULL);
    cr_assert_str_eq(hs_json_str(info, "meshKey"), MESH_HEX);
    json_decref(info);
    cr_assert_eq(raw_expect(peer, DERP_FRAME_WATCH_CONNS, p), 0);
}

Test(derp_mesh, client_side_forwards_to_the_peer_that_has_the_key)
{
    struct raw peer, x;
    uint8_t pub[DERP_KEY_LEN], priv[DERP_KEY_LEN], remote[DERP_KEY_LEN], p[DERP_RX_SIZE];
    uint8_t present[DERP_PEER_PRESENT_LEN] = { 0 }, gone[DERP_KEY_LEN + 1] = { 0 };
    char entry[32];
    int port, lfd = listen_local(&port), type = 0;
    size_t len = 0;

    snprintf(entry, sizeof(entry), "127.0.0.1:%d", port);
    mesh_setup(entry);
    crypto_box_keypair(pub, priv);
    accept_mesh(lfd, &peer, pub);
    expect_client_info(&peer, priv);
    raw_send(&peer, DERP_FRAME_SERVER_INFO, "x", 1, NULL, 0);
    fill_key(remote, 0x77);
    memcpy(present, remote, DERP_KEY_LEN);
    raw_send(&peer, DERP_FRAME_PEER_PRESENT, present, sizeof(present), NULL, 0);

    /* A local client's packet for the remote key goes to the peer as ForwardPacket. The
     * PeerPresent may still be on its way: NotHere answers mean "try again". */
    raw_connect(&x, NULL, false);
    for (int i = 0; i < 50 && type != DERP_FRAME_FORWARD_PACKET; i++) {
        raw_send(&x, DERP_FRAME_SEND_PACKET, remote, DERP_KEY_LEN, "ping", 4);
        type = raw_frame(&peer, p, &len, 100);
    }
    cr_assert_eq(type, DERP_FRAME_FORWARD_PACKET);
    cr_assert_eq(len, 2 * DERP_KEY_LEN + 4);
    cr_assert_eq(memcmp(p, x.pub, DERP_KEY_LEN), 0, "source: the local sender");
    cr_assert_eq(memcmp(p + DERP_KEY_LEN, remote, DERP_KEY_LEN), 0);
    cr_assert_eq(memcmp(p + 2 * DERP_KEY_LEN, "ping", 4), 0);

    /* PeerGone: no route any more, the sender hears NotHere. */
    memcpy(gone, remote, DERP_KEY_LEN);
    raw_send(&peer, DERP_FRAME_PEER_GONE, gone, sizeof(gone), NULL, 0);
    while (raw_frame(&x, p, &len, 200) >= 0)
        ; /* NotHere answers from before the PeerPresent: not what is checked next */
    for (int i = 0; i < 50; i++) {
        raw_send(&x, DERP_FRAME_SEND_PACKET, remote, DERP_KEY_LEN, "ping", 4);
        if (raw_frame(&x, p, &len, 100) == DERP_FRAME_PEER_GONE && p[DERP_KEY_LEN] == 1)
            break;
    }
    cr_assert_eq(p[DERP_KEY_LEN], 1);
    cr_assert_eq(memcmp(p, remote, DERP_KEY_LEN), 0);

    /* The peer's link breaks: the relay dials again (1 s back-off). */
    close(peer.fd);
    accept_mesh(lfd, &peer, pub);
    expect_client_info(&peer, priv);
    close(peer.fd);
    close(x.fd);
    mesh_teardown();
    close(lfd);
}

/* mesh_with may list this very server: it sees its own key and leaves that entry alone. */
Test(derp_mesh, client_side_skips_itself)
{
    struct raw peer;
    uint8_t self[DERP_KEY_LEN];
    char entry[32], hex[65];
    int port, lfd = listen_local(&port);
    struct pollfd pf = { .fd = lfd, .events = POLLIN };

    snprintf(entry, sizeof(entry), "http://127.0.0.1:%d", port);
    mesh_setup(entry);
    derp_server_key_hex(msrv, hex);
    cr_assert_eq(sodium_hex2bin(self, sizeof(self), hex, 64, NULL, NULL, NULL), 0);
    accept_mesh(lfd, &peer, self);
    cr_assert(raw_closed(&peer), "a connection to itself is dropped");
    close(peer.fd);
    cr_assert_eq(poll(&pf, 1, 2500), 0, "and never dialled again (back-off is 1 s)");
    mesh_teardown();
    close(lfd);
}

/* Relays the replicas found in the database: a new URL is dialled, one no longer listed has
 * its link closed, and a URL mesh_with names already is not dialled a second time. */
Test(derp_mesh, peers_found_by_replicas_are_dialled_and_dropped)
{
    struct raw one, two, fixed;
    uint8_t pub[DERP_KEY_LEN], priv[DERP_KEY_LEN];
    char e1[48], e2[48], ef[48];
    int p1, p2, pf, l1 = listen_local(&p1), l2 = listen_local(&p2), lf = listen_local(&pf);
    struct hs_strv urls = { 0 };
    struct pollfd poll_fixed = { .fd = lf, .events = POLLIN };

    snprintf(e1, sizeof(e1), "http://127.0.0.1:%d/derp", p1);
    snprintf(e2, sizeof(e2), "http://127.0.0.1:%d/derp", p2);
    snprintf(ef, sizeof(ef), "http://127.0.0.1:%d/derp", pf);
    mesh_setup(ef);
    crypto_box_keypair(pub, priv);
    accept_mesh(lf, &fixed, pub);
    expect_client_info(&fixed, priv);

    hs_strv_push(&urls, e1);
    hs_strv_push(&urls, ef);
    derp_server_mesh_peers(msrv, &urls);
    accept_mesh(l1, &one, pub);
    expect_client_info(&one, priv);

    hs_strv_free(&urls);
    hs_strv_push(&urls, e2);
    hs_strv_push(&urls, ef);
    derp_server_mesh_peers(msrv, &urls);
    cr_assert(raw_closed(&one), "the replica that left the list is dropped");
    accept_mesh(l2, &two, pub); /* in the slot the first one left */
    expect_client_info(&two, priv);
    cr_assert_eq(poll(&poll_fixed, 1, 1500), 0, "mesh_with's peer is not dialled twice");

    hs_strv_free(&urls);
    derp_server_mesh_peers(msrv, &urls);
    cr_assert(raw_closed(&two));
    close(one.fd);
    close(two.fd);
    close(fixed.fd);
    mesh_teardown();
    close(l1);
    close(l2);
    close(lf);
}
