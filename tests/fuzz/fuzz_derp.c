/* DERP: hostile bytes from a client, fed to the relay's real frame handling (derp_server.c
 * is included so its static functions run as they do in the server). The first input byte
 * picks whether the client has completed its ClientInfo (bit 0) and whether it proved the
 * mesh key (bit 1: WatchConns, ForwardPacket and ClosePeer are then served). */
#include "../../core/derp/derp_server.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct hs_config cfg;
    struct derp_server d = { .cfg = &cfg };
    struct dclient c = { .srv = &d };

    if (size < 1 || size - 1 > DERP_RX_SIZE)
        return 0;
    keys_generate(&d.key);
    c.rx = hs_xmalloc(size);
    c.rxcap = size;
    hs_buf_init(&c.tx, DERP_TX_HARD_LIMIT);
    c.ready = data[0] & 1;
    c.mesh = c.ready && (data[0] & 2);
    if (c.ready) {
        memset(c.key, 0x42, DERP_KEY_LEN);
        reg_add(&d, &c); /* packets to 0x42... loop back to this client */
    }
    memcpy(c.rx, data + 1, size - 1);
    c.rxlen = size - 1;
    process_rx(&c);
    hs_buf_free(&c.tx);
    free(c.rx);
    return 0;
}
