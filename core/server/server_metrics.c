/* What /metrics on metrics_listen_addr shows: headscale's metric names where headscale has
 * the same measure (so its dashboards keep working), ours with the headscale_ prefix
 * otherwise, and the usual process_ metrics. Each is read from the module that counts it,
 * at every scrape. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "auth/auth.h"
#include "server/server_internal.h"
#include "replica/replica.h"
#include "state/state.h"
#include "store/store.h"

#define USEC 1000000

struct server_metrics {
    struct server_metrics_deps d;
    struct metrics *reg;
    struct metric *nodes, *online, *policy_compiles, *policy_compile_us;
    struct metric *sessions, *ended, *cancelled, *lite_updates;
    struct metric *sent[CONTROL_MAP_KINDS], *sent_bytes[CONTROL_MAP_KINDS];
    struct metric *conns, *conns_total, *streams, *requests, *bad_frames;
    struct metric *derp_clients, *derp_packets, *derp_bytes, *derp_drops, *derp_bad;
    struct metric *mesh_peers, *mesh_watchers, *mesh_out, *mesh_in;
    struct metric *registrations[AUTH_OUTCOMES];
    struct metric *cpu_us, *rss, *vsize, *fds, *max_fds, *start_us;
};

static struct metric *add(struct server_metrics *sm, enum metric_type type, const char *name,
                          const char *labels, const char *help, int64_t per_unit)
{
    return metrics_add(sm->reg, &(struct metric_def){ .name = name, .labels = labels,
                                                      .help = help, .type = type,
                                                      .per_unit = per_unit });
}

static void add_hist(struct server_metrics *sm, const char *name, const char *labels,
                     const char *help, int64_t per_unit, const struct metrics_hist *h)
{
    metrics_add_hist(sm->reg, &(struct metric_def){ .name = name, .labels = labels, .help = help,
                                                    .type = METRIC_HISTOGRAM,
                                                    .per_unit = per_unit }, h);
}

static void add_state(struct server_metrics *sm)
{
    sm->nodes = add(sm, METRIC_GAUGE, "headscale_nodestore_nodes", NULL,
                    "Nodes this server knows (every user's, online or not)", 1);
    sm->online = add(sm, METRIC_GAUGE, "headscale_nodes_online", NULL,
                     "Nodes with a map stream open on this server", 1);
    sm->policy_compiles = add(sm, METRIC_COUNTER, "headscale_policy_compiles_total", NULL,
                              "Policy compiles for the nodes (whole or for the changed ones)",
                              1);
    sm->policy_compile_us = add(sm, METRIC_COUNTER, "headscale_policy_compile_seconds_total",
                                NULL, "Time spent compiling the policy", USEC);
}

/* headscale labels its count by status and type (it counts keep-alives only); ours counts
 * every kind, and their bytes. */
static void add_sent(struct server_metrics *sm)
{
    static const char *const labels[CONTROL_MAP_KINDS] = {
        [CONTROL_MAP_FULL] = "status=\"ok\",type=\"full\"",
        [CONTROL_MAP_DELTA] = "status=\"ok\",type=\"delta\"",
        [CONTROL_MAP_KEEPALIVE] = "status=\"ok\",type=\"keepalive\"",
    };

    for (int k = 0; k < CONTROL_MAP_KINDS; k++)
        sm->sent[k] = add(sm, METRIC_COUNTER, "headscale_mapresponse_sent_total", labels[k],
                          "Map messages sent to clients, by kind", 1);
    for (int k = 0; k < CONTROL_MAP_KINDS; k++)
        sm->sent_bytes[k] = add(sm, METRIC_COUNTER, "headscale_mapresponse_sent_bytes_total",
                                labels[k], "Bytes of the map messages sent, as written", 1);
}

static void add_maps(struct server_metrics *sm)
{
    sm->sessions = add(sm, METRIC_GAUGE, "headscale_map_sessions", NULL,
                       "Streaming map polls open", 1);
    /* headscale's reasons: the client went ("done"), the server ended it ("cancelled") */
    sm->ended = add(sm, METRIC_COUNTER, "headscale_mapresponse_ended_total", "reason=\"done\"",
                    "Streaming map polls ended", 1);
    sm->cancelled = add(sm, METRIC_COUNTER, "headscale_mapresponse_ended_total",
                        "reason=\"cancelled\"", "Streaming map polls ended", 1);
    sm->lite_updates = add(sm, METRIC_COUNTER, "headscale_mapresponse_endpoint_updates_total",
                           "status=\"ok\"", "Map requests that only report (endpoints, "
                           "Hostinfo) without a stream", 1);
    add_sent(sm);
    add_hist(sm, "headscale_map_batch_window_seconds", NULL,
             "How long the first node change of a batch waited for it to go out", USEC,
             control_service_batch_hist(sm->d.svc, CONTROL_BATCH_WINDOW));
    add_hist(sm, "headscale_map_batch_duration_seconds", NULL,
             "How long a batch of changes took to build and queue for the map streams", USEC,
             control_service_batch_hist(sm->d.svc, CONTROL_BATCH_DURATION));
    add_hist(sm, "headscale_map_batch_size", NULL,
             "Node changes a batch carried (a node once per kind of change)", 1,
             control_service_batch_hist(sm->d.svc, CONTROL_BATCH_SIZE));
}

/* Each statement timed by its first SQL word, and each commit. */
static void add_store(struct server_metrics *sm)
{
    static const char *const labels[STORE_OPS] = {
        [STORE_OP_SELECT] = "operation=\"select\"", [STORE_OP_INSERT] = "operation=\"insert\"",
        [STORE_OP_UPDATE] = "operation=\"update\"", [STORE_OP_DELETE] = "operation=\"delete\"",
        [STORE_OP_OTHER] = "operation=\"other\"",   [STORE_OP_COMMIT] = "operation=\"commit\"",
    };

    for (int i = 0; i < STORE_OPS; i++)
        add_hist(sm, "headscale_store_operation_duration_seconds", labels[i],
                 "Database statements and commits, by kind, as this server timed them", USEC,
                 store_latency(sm->d.store, i));
    if (sm->d.replica)
        add_hist(sm, "headscale_replica_notify_lag_seconds", NULL,
                 "Other replicas' changes: from the writer's clock before its commit to this "
                 "replica passing them on", USEC, replica_lag(sm->d.replica));
}

static void add_control(struct server_metrics *sm)
{
    sm->conns = add(sm, METRIC_GAUGE, "headscale_control_connections", NULL,
                    "Noise control connections open (/ts2021)", 1);
    sm->conns_total = add(sm, METRIC_COUNTER, "headscale_control_connections_accepted_total", NULL,
                          "Noise control connections accepted", 1);
    sm->streams = add(sm, METRIC_GAUGE, "headscale_control_streams", NULL,
                      "HTTP/2 streams open over the control connections", 1);
    sm->requests = add(sm, METRIC_COUNTER, "headscale_control_requests_total", NULL,
                       "Requests received over the control connections", 1);
    sm->bad_frames = add(sm, METRIC_COUNTER, "headscale_control_bad_frames_total", NULL,
                         "Control connections closed for a malformed frame", 1);
}

static void add_registrations(struct server_metrics *sm)
{
    static const char *const labels[AUTH_OUTCOMES] = {
        [AUTH_KEY_OK] = "auth=\"authkey\",status=\"ok\"",
        [AUTH_KEY_REFUSED] = "auth=\"authkey\",status=\"refused\"",
        [AUTH_LOGIN_STARTED] = "auth=\"interactive\",status=\"pending\"",
        [AUTH_LOGIN_COMPLETED] = "auth=\"interactive\",status=\"ok\"",
        [AUTH_LOGIN_REJECTED] = "auth=\"interactive\",status=\"rejected\"",
    };

    for (int i = 0; i < AUTH_OUTCOMES; i++)
        sm->registrations[i] = add(sm, METRIC_COUNTER, "headscale_registrations_total",
                                   labels[i], "Node registrations by how they ended", 1);
}

static void add_derp(struct server_metrics *sm)
{
    if (!sm->d.derp)
        return;
    sm->derp_clients = add(sm, METRIC_GAUGE, "headscale_derp_clients", NULL,
                           "Clients connected to the embedded DERP server", 1);
    sm->derp_packets = add(sm, METRIC_COUNTER, "headscale_derp_packets_relayed_total", NULL,
                           "Packets the embedded DERP server relayed", 1);
    sm->derp_bytes = add(sm, METRIC_COUNTER, "headscale_derp_bytes_relayed_total", NULL,
                         "Payload bytes the embedded DERP server relayed", 1);
    sm->derp_drops = add(sm, METRIC_COUNTER, "headscale_derp_packets_dropped_total", NULL,
                         "Packets dropped: no such client, or its queue was full", 1);
    sm->derp_bad = add(sm, METRIC_COUNTER, "headscale_derp_bad_frames_total", NULL,
                       "DERP connections closed for a malformed frame", 1);
    sm->mesh_peers = add(sm, METRIC_GAUGE, "headscale_derp_mesh_peers", NULL,
                         "Other servers of the region our relay is linked to (mesh_with)", 1);
    sm->mesh_watchers = add(sm, METRIC_GAUGE, "headscale_derp_mesh_watchers", NULL,
                            "Other servers of the region watching our relay's clients", 1);
    sm->mesh_out = add(sm, METRIC_COUNTER, "headscale_derp_mesh_packets_forwarded_total",
                       "direction=\"out\"", "Packets forwarded between the region's servers: "
                       "out to another's client, in to one of ours", 1);
    sm->mesh_in = add(sm, METRIC_COUNTER, "headscale_derp_mesh_packets_forwarded_total",
                      "direction=\"in\"", "Packets forwarded between the region's servers: "
                      "out to another's client, in to one of ours", 1);
}

static void add_process(struct server_metrics *sm)
{
    sm->cpu_us = add(sm, METRIC_COUNTER, "process_cpu_seconds_total", NULL,
                     "User and system CPU time spent in seconds", USEC);
    sm->rss = add(sm, METRIC_GAUGE, "process_resident_memory_bytes", NULL,
                  "Resident memory size in bytes", 1);
    sm->vsize = add(sm, METRIC_GAUGE, "process_virtual_memory_bytes", NULL,
                    "Virtual memory size in bytes", 1);
    sm->fds = add(sm, METRIC_GAUGE, "process_open_fds", NULL, "Open file descriptors", 1);
    sm->max_fds = add(sm, METRIC_GAUGE, "process_max_fds", NULL,
                      "The most file descriptors this process may open", 1);
    sm->start_us = add(sm, METRIC_GAUGE, "process_start_time_seconds", NULL,
                       "When the process started, in seconds since the Unix epoch", USEC);
}

static void collect_state(struct server_metrics *sm)
{
    size_t n, online = 0;
    uint64_t compiles, us;

    state_rdlock(sm->d.state);
    n = state_node_count(sm->d.state);
    for (size_t i = 0; i < n; i++)
        online += state_node_at(sm->d.state, i)->online;
    state_unlock(sm->d.state);
    state_compile_stats(sm->d.state, &compiles, &us);
    metric_set(sm->nodes, (int64_t)n);
    metric_set(sm->online, (int64_t)online);
    metric_set(sm->policy_compiles, (int64_t)compiles);
    metric_set(sm->policy_compile_us, (int64_t)us);
}

static void collect_control(struct server_metrics *sm)
{
    struct control_service_stats ss;
    struct control_stats cs;

    control_service_get_stats(sm->d.svc, &ss);
    metric_set(sm->sessions, (int64_t)ss.sessions);
    metric_set(sm->ended, (int64_t)ss.sessions_ended);
    metric_set(sm->cancelled, (int64_t)ss.sessions_cancelled);
    metric_set(sm->lite_updates, (int64_t)ss.lite_updates);
    for (int k = 0; k < CONTROL_MAP_KINDS; k++) {
        metric_set(sm->sent[k], (int64_t)ss.sent[k]);
        metric_set(sm->sent_bytes[k], (int64_t)ss.sent_bytes[k]);
    }
    control_get_stats(control_service_control(sm->d.svc), &cs);
    metric_set(sm->conns, (int64_t)cs.conns_open);
    metric_set(sm->conns_total, (int64_t)cs.conns_total);
    metric_set(sm->streams, (int64_t)cs.streams_open);
    metric_set(sm->requests, (int64_t)cs.requests_total);
    metric_set(sm->bad_frames, (int64_t)cs.bad_frames);
}

static void collect_registrations(struct server_metrics *sm)
{
    uint64_t n[AUTH_OUTCOMES];

    auth_outcomes(sm->d.auth, n);
    for (int i = 0; i < AUTH_OUTCOMES; i++)
        metric_set(sm->registrations[i], (int64_t)n[i]);
}

static void collect_derp(struct server_metrics *sm)
{
    struct derp_stats ds;

    if (!sm->d.derp)
        return;
    derp_server_stats(sm->d.derp, &ds);
    metric_set(sm->derp_clients, (int64_t)ds.clients);
    metric_set(sm->derp_packets, (int64_t)ds.packets_relayed);
    metric_set(sm->derp_bytes, (int64_t)ds.bytes_relayed);
    metric_set(sm->derp_drops, (int64_t)ds.packets_dropped);
    metric_set(sm->derp_bad, (int64_t)ds.bad_frames);
    metric_set(sm->mesh_peers, (int64_t)ds.mesh_peers);
    metric_set(sm->mesh_watchers, (int64_t)ds.mesh_watchers);
    metric_set(sm->mesh_out, (int64_t)ds.mesh_packets_out);
    metric_set(sm->mesh_in, (int64_t)ds.mesh_packets_in);
}

static int64_t count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int64_t n = 0;

    if (!d)
        return 0;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

/* proc(5) /proc/self/stat: field k (1-based) of the fields after the command name, which is
 * in parentheses and may hold spaces. 0 when absent. */
static uint64_t stat_field(const char *text, unsigned k)
{
    const char *p = strrchr(text, ')');
    uint64_t v = 0;
    char word[32];

    for (unsigned i = 2; p && i < k; i++)
        p = strchr(p + 1, ' ');
    if (!p)
        return 0;
    snprintf(word, sizeof(word), "%.*s", (int)strcspn(p + 1, " \n"), p + 1);
    return hs_parse_u64(word, UINT64_MAX, &v) == 0 ? v : 0;
}

static void collect_process(struct server_metrics *sm)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    struct rlimit rl;
    char *text;
    size_t len;

    if (hs_read_file("/proc/self/stat", 4096, &text, &len) == 0) {
        uint64_t cpu = stat_field(text, 14) + stat_field(text, 15); /* utime + stime */
        metric_set(sm->cpu_us, tick > 0 ? (int64_t)(cpu * USEC / (uint64_t)tick) : 0);
        metric_set(sm->vsize, (int64_t)stat_field(text, 23));
        metric_set(sm->rss, (int64_t)stat_field(text, 24) * (page > 0 ? page : 4096));
        free(text);
    }
    metric_set(sm->fds, count_fds());
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        metric_set(sm->max_fds, (int64_t)rl.rlim_cur);
}

static void collect(void *arg)
{
    struct server_metrics *sm = arg;

    collect_state(sm);
    collect_control(sm);
    collect_registrations(sm);
    collect_derp(sm);
    collect_process(sm);
}

struct server_metrics *server_metrics_new(const struct server_metrics_deps *d)
{
    struct server_metrics *sm = hs_xcalloc(1, sizeof(*sm));

    sm->d = *d;
    sm->reg = metrics_new();
    add_state(sm);
    add_maps(sm);
    add_store(sm);
    add_control(sm);
    add_registrations(sm);
    add_derp(sm);
    add_process(sm);
    metric_set(sm->start_us, hs_now_us()); /* the server's start, moments after the process's */
    metrics_on_render(sm->reg, collect, sm);
    return sm;
}

void server_metrics_free(struct server_metrics *sm)
{
    if (!sm)
        return;
    metrics_free(sm->reg);
    free(sm);
}

int server_metrics_render(struct server_metrics *sm, struct hs_buf *out)
{
    return metrics_render(sm->reg, out);
}
