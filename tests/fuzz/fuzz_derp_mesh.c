/* DERP mesh: hostile bytes from a mesh peer (another server of the region) fed to our mesh
 * client's real handling (mesh.c is included for its static functions): the HTTP answer to
 * the upgrade, the handshake, then PeerPresent / PeerGone into the route table. The first
 * input byte picks the state the bytes arrive in. */
#include "../../core/derp/mesh.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum mesh_state states[] = { MESH_UPGRADING, MESH_KEYING, MESH_HANDSHAKE,
                                              MESH_WATCHING };
    static struct hs_config cfg;
    static struct key_pair key; /* drawn once, not a scalar multiplication per input */
    static int ready;
    struct derp_server d = { .cfg = &cfg, .epfd = -1 };
    struct mesh_peer p = { .srv = &d, .fd = -1, .entry = "fuzz" };

    if (size < 1 || size - 1 > DERP_RX_SIZE)
        return 0;
    if (!ready) {
        keys_generate(&key);
        /* Lines logged per input would be most of the output (fuzz_derp wrote 13 GB in 22
         * minutes, a line per ClosePeer frame); HS_FUZZ_LOG=1 shows them. */
        if (!getenv("HS_FUZZ_LOG"))
            log_set_level(LOG_OFF);
        ready = 1;
    }
    d.key = key;
    d.mesh = &p;
    d.nmesh = 1;
    hs_buf_init(&p.tx, DERP_TX_HARD_LIMIT);
    p.rx = hs_xmalloc(DERP_RX_SIZE);
    p.st = states[data[0] % 4];
    memcpy(p.rx, data + 1, size - 1);
    p.rxlen = size - 1;
    process_rx(&p);
    derp__routes_free(&d.routes);
    free(p.rx);
    hs_buf_free(&p.tx);
    return 0;
}
