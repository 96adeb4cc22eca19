/* The ts2021 control channel from the first decrypted byte to the database: the input is
 * what a client sends after the Noise handshake (the HTTP/2 preface, frames, HPACK headers,
 * RegisterRequest and MapRequest bodies). It is sealed into Noise records as the client's
 * transport would, written to a socket, and a real connection of the event loop (loop.c is
 * included so that its static parts run as in the server) reads it through nghttp2 into the
 * real register and map handlers, over a database put back after each input (world.h). The
 * workers' jobs and the loop's inbox are run in turn on this thread, so a run is repeatable.
 *
 * The connection is node 1's (machine key world.h gives it). The world's key placeholders in
 * the input are replaced by its keys (fuzz_world_put_keys), so that seeds can register with
 * its pre-auth key. */
#include "../../core/control/loop.c"

#include <sys/socket.h>

#include "control/service_internal.h"
#include "world.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define INPUT_MAX (64u << 10) /* the socket holds it all, sealed, before the loop reads */
#define ROUNDS 4              /* of jobs and inbox: answers may queue more */

static struct key_pair noise_key;

/* Seals the client's bytes into records on fd, as the client's transport t. */
static void send_sealed(int fd, struct noise_transport *t, const uint8_t *pt, size_t len)
{
    uint8_t rec[NOISE_MAX_FRAME];

    while (len) {
        size_t n = len < NOISE_MAX_PLAINTEXT ? len : NOISE_MAX_PLAINTEXT;
        ssize_t w = noise_seal(t, pt, n, rec);
        if (w < 0 || write(fd, rec, (size_t)w) != w)
            abort(); /* the socket buffer must hold INPUT_MAX sealed */
        pt += n;
        len -= n;
    }
}

/* Discards what the server wrote to the client. */
static void drain(int fd)
{
    uint8_t buf[65536];

    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

/* A connection of node 1 from 127.0.0.1 on fd, its transport paired with client's. */
static struct conn *conn_of_node(struct control *c, int fd, struct noise_transport *client)
{
    struct conn *cn = hs_xcalloc(1, sizeof(*cn));

    cn->nc = net_conn_new(fd, NULL);
    cn->ctl = c;
    memset(cn->machine_key, FUZZ_WORLD_MACHINE_KEY, KEY_LEN);
    cn->capver = 130;
    cn->client_ip[10] = cn->client_ip[11] = 0xff;
    cn->client_ip[12] = 127;
    cn->client_ip[15] = 1;
    memset(cn->nt.rx_key, 0xaa, sizeof(cn->nt.rx_key));
    memset(cn->nt.tx_key, 0xbb, sizeof(cn->nt.tx_key));
    memcpy(client->tx_key, cn->nt.rx_key, sizeof(client->tx_key));
    memcpy(client->rx_key, cn->nt.tx_key, sizeof(client->rx_key));
    return cn;
}

/* What the worker threads and the loop thread would do next, in turn. */
static void run_rounds(struct control *c, int client_fd)
{
    for (int i = 0; i < ROUNDS; i++) {
        struct job *j;
        while ((j = job_pop(c))) {
            c->h.request(c->h.ctx, j->rq);
            free(j);
        }
        loop_drain_inbox(c);
        loop_attention(c);
        drain(client_fd);
    }
}

struct input {
    const uint8_t *data;
    size_t size;
};

/* One connection's bytes against a fresh world and control service: what it left in the
 * database. */
static uint64_t run(void *arg)
{
    const struct input *in = arg;
    struct fuzz_world w;
    struct mapper *m;
    struct control_service *svc;
    struct control_service_deps deps = { .noise_key = &noise_key };
    struct control *c;
    struct conn *cn;
    struct noise_transport client = { 0 };
    int sv[2];

    fuzz_world_open(&w);
    m = mapper_new(w.cfg, NULL);
    deps.cfg = w.cfg;
    deps.auth = w.au;
    deps.state = w.state;
    deps.mapper = m;
    if (control_service_new(&deps, &svc) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    c = control_service_control(svc);
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    cn = conn_of_node(c, sv[0], &client);
    send_sealed(sv[1], &client, in->data, in->size);
    loop_adopt(c, cn); /* reads it all: nghttp2 dispatches the requests */
    run_rounds(c, sv[1]);
    loop_close_all(c);
    close(sv[1]);
    control_service_free(svc);
    mapper_free(m);
    return fuzz_world_close(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    struct input in = { .size = size };
    uint8_t *copy;

    if (size > INPUT_MAX)
        return 0;
    if (!ready) {
        fuzz_world_init(false);
        keys_generate(&noise_key);
        ready = 1;
    }
    copy = hs_xmalloc(size + 1);
    memcpy(copy, data, size);
    fuzz_world_put_keys(copy, size);
    in.data = copy;
    fuzz_world_run(run, &in);
    free(copy);
    return 0;
}
