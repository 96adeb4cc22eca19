/* DERP: hostile bytes from a client, fed to the relay's real frame handling (derp_server.c
 * is included so its static functions run as they do in the server). The first input byte
 * picks whether the client has completed its ClientInfo (bit 0) and whether it proved the
 * mesh key (bit 1: WatchConns, ForwardPacket and ClosePeer are then served). With bit 2 (and
 * bit 0 clear) the harness seals a ClientInfo frame for a fixed client key: the next two bytes
 * give the length of its JSON, which follows; the rest is the frames after it. The relay's
 * mesh key is 32 bytes of 0x11. */
#include "../../core/derp/derp_server.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct key_pair server, client;

/* A ClientInfo frame carrying json in a box from the client's key to the server's; caller
 * frees. */
static uint8_t *sealed_client_info(const uint8_t *json, size_t len, size_t *out_len)
{
    size_t plen = DERP_KEY_LEN + DERP_NONCE_LEN + crypto_box_MACBYTES + len;
    uint8_t *f = hs_xcalloc(1, DERP_HDR_LEN + plen), *p = f + DERP_HDR_LEN;

    f[0] = DERP_FRAME_CLIENT_INFO;
    f[1] = (uint8_t)(plen >> 24);
    f[2] = (uint8_t)(plen >> 16);
    f[3] = (uint8_t)(plen >> 8);
    f[4] = (uint8_t)plen;
    memcpy(p, client.pub, DERP_KEY_LEN);
    /* nonce: all zero */
    if (crypto_box_easy(p + DERP_KEY_LEN + DERP_NONCE_LEN, json, len, p + DERP_KEY_LEN,
                        server.pub, client.priv) != 0)
        abort(); /* both keys are ours: not low-order */
    *out_len = DERP_HDR_LEN + plen;
    return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct hs_config cfg;
    static int ready;
    struct derp_server d = { .cfg = &cfg, .has_mesh_key = true };
    struct dclient c = { .srv = &d };
    uint8_t *info = NULL;
    size_t info_len = 0, jlen;

    if (!ready) {
        keys_generate(&server);
        keys_generate(&client);
        /* Lines logged per input would be most of the output (fuzz_derp wrote 13 GB in 22
         * minutes, a line per ClosePeer frame); HS_FUZZ_LOG=1 shows them. */
        if (!getenv("HS_FUZZ_LOG"))
            log_set_level(LOG_OFF);
        ready = 1;
    }
    if (size < 1 || size - 1 > DERP_RX_SIZE)
        return 0;
    d.key = server;
    memset(d.mesh_key, 0x11, DERP_KEY_LEN);
    c.ready = data[0] & 1;
    c.mesh = c.ready && (data[0] & 2);
    if (c.ready) {
        memset(c.key, 0x42, DERP_KEY_LEN);
        reg_add(&d, &c); /* packets to 0x42... loop back to this client */
    } else if ((data[0] & 4) && size >= 3 && (jlen = (size_t)data[1] << 8 | data[2]) <= size - 3) {
        info = sealed_client_info(data + 3, jlen, &info_len);
        data += 2 + jlen;
        size -= 2 + jlen;
    }
    c.rxcap = info_len + size;
    c.rx = hs_xmalloc(c.rxcap);
    hs_buf_init(&c.tx, DERP_TX_HARD_LIMIT);
    if (info)
        memcpy(c.rx, info, info_len);
    memcpy(c.rx + info_len, data + 1, size - 1);
    c.rxlen = info_len + size - 1;
    process_rx(&c);
    if (c.ready && reg_find(&d, c.key) == &c)
        reg_remove(&d, &c);
    hs_buf_free(&c.tx);
    free(c.rx);
    free(info);
    return 0;
}
