/* Noise: hostile handshake initiations and transport records (noise.c is included so that the
 * harness can build initiations with its symmetric state). The first input byte picks:
 * - even: the rest is raw bytes, taken as an initiation and as a stream of record frames
 *   under an all-zero key (malformed frames, forged records);
 * - odd: a valid initiation whose version (2 bytes), ephemeral key and static key (32 bytes
 *   each, low-order points included) come from the input. The harness holds the server's
 *   private key, so it computes both DH results an initiator would. After the handshake the
 *   rest is records from the client: [op][len: 2 bytes][bytes], where an even op seals the
 *   bytes with the client's transport and an odd one sends them as a raw frame. */
#include "../../core/noise/noise.c"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct key_pair server;

static void raw(const uint8_t *data, size_t size)
{
    struct noise_handshake_result res;
    struct noise_transport t = { 0 };
    uint8_t buf[NOISE_MAX_FRAME * 2];
    size_t off = 0;

    noise_accept(&server, data, size, &res);
    if (size > sizeof(buf))
        size = sizeof(buf);
    memcpy(buf, data, size);
    while (off < size) {
        ssize_t n = noise_frame_len(buf + off, size - off);
        uint8_t *pt;
        size_t ptlen;
        if (n < 0)
            break;
        noise_open(&t, buf + off, (size_t)n, &pt, &ptlen);
        off += (size_t)n;
    }
}

/* The initiation a client with ephemeral key e and static key st would send, computed with
 * the server's private key (DH is symmetric). A low-order key leaves the rest zero, where
 * the server must refuse it. */
static void initiation(uint16_t version, const uint8_t e[32], const uint8_t st[32],
                       uint8_t msg[NOISE_INIT_LEN])
{
    struct symmetric s;
    uint8_t k[32];

    memset(msg, 0, NOISE_INIT_LEN);
    msg[0] = (uint8_t)(version >> 8);
    msg[1] = (uint8_t)version;
    msg[2] = 1;
    msg[4] = 96;
    memcpy(msg + 5, e, 32);
    if (symmetric_init(&s, version, server.pub) < 0 || mix_hash(&s, e, 32) < 0 ||
        mix_dh(&s, server.priv, e, k) < 0 || encrypt_and_hash(&s, k, st, 32, msg + 37) < 0 ||
        mix_dh(&s, server.priv, st, k) < 0)
        return;
    encrypt_and_hash(&s, k, NULL, 0, msg + 85);
}

/* One record from the client: sealed (and checked to open to what was sealed), or raw. */
static int record(struct noise_transport *server_t, struct noise_transport *client_t, int op,
                  const uint8_t *p, size_t len)
{
    uint8_t frame[NOISE_MAX_FRAME], *pt;
    size_t ptlen;
    ssize_t n;

    if (!(op & 1)) {
        if (len > NOISE_MAX_PLAINTEXT || (n = noise_seal(client_t, p, len, frame)) < 0)
            return -1;
        if (noise_frame_len(frame, (size_t)n) != n ||
            noise_open(server_t, frame, (size_t)n, &pt, &ptlen) < 0 || ptlen != len ||
            memcmp(pt, p, len) != 0)
            abort(); /* a record the client sealed must open to what it sealed */
        return 0;
    }
    if (len > sizeof(frame))
        return -1;
    memcpy(frame, p, len);
    if ((n = noise_frame_len(frame, len)) < 0)
        return -1;
    return noise_open(server_t, frame, (size_t)n, &pt, &ptlen);
}

static void handshake_then_records(const uint8_t *data, size_t size)
{
    struct noise_handshake_result res;
    struct noise_transport client;
    uint8_t msg[NOISE_INIT_LEN];
    size_t off = 66;

    if (size < off)
        return;
    initiation((uint16_t)(data[0] << 8 | data[1]), data + 2, data + 34, msg);
    if (noise_accept(&server, msg, sizeof(msg), &res) < 0)
        return;
    if (memcmp(res.peer_static, data + 34, 32) != 0)
        abort(); /* the server must learn the static key the client sent */
    memcpy(client.tx_key, res.transport.rx_key, 32);
    memcpy(client.rx_key, res.transport.tx_key, 32);
    client.tx_nonce = client.rx_nonce = 0;
    while (size - off >= 3) {
        size_t len = (size_t)data[off + 1] << 8 | data[off + 2];
        if (len > size - off - 3 ||
            record(&res.transport, &client, data[off], data + off + 3, len) < 0)
            break;
        off += 3 + len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;

    if (!ready) {
        keys_generate(&server);
        /* Lines logged per input would be most of the output (fuzz_derp wrote 13 GB in 22
         * minutes, a line per ClosePeer frame); HS_FUZZ_LOG=1 shows them. */
        if (!getenv("HS_FUZZ_LOG"))
            log_set_level(LOG_OFF);
        ready = 1;
    }
    if (size < 1)
        return 0;
    if (data[0] & 1)
        handshake_then_records(data + 1, size - 1);
    else
        raw(data + 1, size - 1);
    return 0;
}
