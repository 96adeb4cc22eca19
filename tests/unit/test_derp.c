/* Tests for core/derp's DERP map: parsing (YAML and JSON), limits, merging of sources and
 * the refresh thread. URL sources use file:// URLs through libcurl. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "derp/derp.h"
#include "derp/derp_internal.h"

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
