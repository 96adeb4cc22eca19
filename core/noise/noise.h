/* noise: Tailscale's ts2021 control channel — the Noise_IK_25519_ChaChaPoly_BLAKE2s handshake
 * (server = responder) and the transport records that carry HTTP/2 afterwards.
 *
 * Wire format (control/controlbase in tailscale): all integers big-endian.
 *   initiation: u16 version | 0x01 | u16 96 | 32 e | 48 enc(s) | 16 tag      (101 bytes)
 *   response:   0x02 | u16 48 | 32 e | 16 tag                                 (51 bytes)
 *   error:      0x03 | u16 len | text
 *   record:     0x04 | u16 len | ciphertext (plaintext + 16-byte tag), whole frame <= 4096
 * Transport nonces are 4 zero bytes + a 64-bit BIG-endian counter (not Noise's little-endian). */
#ifndef HS_NOISE_H
#define HS_NOISE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "keys/keys.h"

#define NOISE_INIT_LEN 101
#define NOISE_RESP_LEN 51
#define NOISE_HDR_LEN 3
#define NOISE_TAG_LEN 16
#define NOISE_MAX_FRAME 4096
#define NOISE_MAX_PLAINTEXT (NOISE_MAX_FRAME - NOISE_HDR_LEN - NOISE_TAG_LEN)
#define NOISE_MSG_RECORD 4
#define NOISE_MSG_ERROR 3

struct noise_transport {
    uint8_t tx_key[32], rx_key[32];
    uint64_t tx_nonce, rx_nonce;
};

struct noise_handshake_result {
    uint16_t version;               /* the client's capability version */
    uint8_t peer_static[KEY_LEN];   /* the client's machine key */
    uint8_t response[NOISE_RESP_LEN];
    struct noise_transport transport;
};

/* Runs the responder side over a 101-byte initiation message. On success fills *out with the
 * 51-byte response to send and the transport keys. -EINVAL for a malformed message, -EACCES
 * when authentication fails (wrong server key, tampering, low-order points). */
int noise_accept(const struct key_pair *server, const uint8_t *msg, size_t len,
                 struct noise_handshake_result *out);

/* Seals plaintext (<= NOISE_MAX_PLAINTEXT) into one record frame written to out
 * (room for len + NOISE_HDR_LEN + NOISE_TAG_LEN). Returns the frame length, or -ERANGE when the
 * nonce space is exhausted. */
ssize_t noise_seal(struct noise_transport *t, const uint8_t *pt, size_t len, uint8_t *out);

/* Parses one frame at buf: returns its total length if complete, -EAGAIN if more bytes are
 * needed, -EINVAL for a frame type other than record, or a length over the limit. */
ssize_t noise_frame_len(const uint8_t *buf, size_t len);

/* Opens the record frame at buf (length from noise_frame_len) in place; *pt points at the
 * plaintext inside buf. -EACCES on authentication failure (fatal for the connection). */
int noise_open(struct noise_transport *t, uint8_t *frame, size_t frame_len, uint8_t **pt,
               size_t *pt_len);

/* Writes an error frame (type 3) carrying msg into out (>= NOISE_HDR_LEN + strlen(msg)).
 * Returns its length. */
size_t noise_error_frame(const char *msg, uint8_t *out, size_t size);

void noise_transport_wipe(struct noise_transport *t);

/* BLAKE2s-256, exposed for tests. */
int noise_blake2s(const uint8_t *in, size_t len, uint8_t out[32]);

#endif
