#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "keys/keys.h"
#include "util/util.h"

#define KEYS_FILE_MAX 4096

void keys_format(const char *prefix, const uint8_t key[KEY_LEN], char *out)
{
    size_t n = strlen(prefix);
    memcpy(out, prefix, n);
    hs_hex_encode(key, KEY_LEN, out + n);
}

int keys_parse(const char *prefix, const char *text, uint8_t key[KEY_LEN])
{
    size_t n = strlen(prefix);
    if (!text || strncmp(text, prefix, n) != 0)
        return -EINVAL;
    return hs_hex_decode(text + n, strlen(text + n), key, KEY_LEN);
}

void keys_derive_public(struct key_pair *kp)
{
    crypto_scalarmult_base(kp->pub, kp->priv);
}

void keys_generate(struct key_pair *kp)
{
    randombytes_buf(kp->priv, KEY_LEN);
    /* Clamp as curve25519 does, so the stored text matches what Tailscale would write. */
    kp->priv[0] &= 248;
    kp->priv[31] = (kp->priv[31] & 127) | 64;
    keys_derive_public(kp);
}

static int keys_create(const char *path, struct key_pair *kp)
{
    char text[KEY_TEXT_MAX + 1];
    char *dir = hs_strdup(path), *slash = strrchr(dir, '/');
    int rc;

    if (slash && slash != dir) {
        *slash = '\0';
        hs_mkdir_p(dir, 0700);
    }
    free(dir);
    keys_generate(kp);
    keys_format("privkey:", kp->priv, text);
    strcat(text, "\n");
    rc = hs_write_file_atomic(path, text, strlen(text), 0600);
    sodium_memzero(text, sizeof(text));
    return rc;
}

int keys_load_or_create(const char *path, struct key_pair *kp)
{
    char *text;
    size_t len;
    int rc;

    rc = hs_read_file(path, KEYS_FILE_MAX, &text, &len);
    if (rc == -ENOENT)
        return keys_create(path, kp);
    if (rc < 0)
        return rc;
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        text[--len] = '\0';
    rc = keys_parse("privkey:", text, kp->priv);
    sodium_memzero(text, len);
    free(text);
    if (rc == 0)
        keys_derive_public(kp);
    return rc;
}
