/* keys: Curve25519 key types and their text forms as Tailscale writes them
 * ("privkey:<64 hex>", "mkey:<hex>", "nodekey:<hex>", "discokey:<hex>"), and the server's
 * Noise (machine) key file. */
#ifndef HS_KEYS_H
#define HS_KEYS_H

#include <stdint.h>

#define KEY_LEN 32
#define KEY_TEXT_MAX 80 /* longest prefix + 64 hex + NUL */

struct key_pair {
    uint8_t priv[KEY_LEN];
    uint8_t pub[KEY_LEN];
};

/* Writes "<prefix><hex>" into out (>= KEY_TEXT_MAX). prefix is e.g. "mkey:". */
void keys_format(const char *prefix, const uint8_t key[KEY_LEN], char *out);
/* Parses "<prefix><64 hex>"; -EINVAL on anything else. */
int keys_parse(const char *prefix, const char *text, uint8_t key[KEY_LEN]);

/* A fresh random key pair (X25519; private key clamped as Tailscale does). */
void keys_generate(struct key_pair *kp);
/* Derives the public half of kp->priv. */
void keys_derive_public(struct key_pair *kp);

/* Loads the private key file "privkey:<hex>\n"; if it does not exist, creates it (and its
 * directory) with mode 0600. -EINVAL for a malformed file (the file is left alone); -EPERM
 * (logged with the reason) when other users could have planted or could replace it: the
 * file is writable by group or others, or a directory above it is unsafe (hs_path_trust). */
int keys_load_or_create(const char *path, struct key_pair *kp);

#endif
