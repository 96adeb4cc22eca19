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

/* A private key whose file or directory other users can write is not the server's own: they
 * could have planted one they know (and read everything sealed to it) or swap it at any time.
 * A directory open to a group is only warned about: members are usually the admins. */
static int keys_check_place(const char *path)
{
    char why[1024];
    struct stat st;
    int v = hs_path_trust(path, 0, why, sizeof(why));

    if (v == HS_PATH_UNSAFE) {
        log_errorx("keys: refusing %s: %s: another user could plant or replace this private "
                   "key", path, why);
        return -EPERM;
    }
    if (v == HS_PATH_GROUP_WRITABLE)
        log_warnx("keys: %s: %s: its members could plant or replace this private key", path,
                  why);
    if (stat(path, &st) == 0 && (st.st_mode & (S_IWGRP | S_IWOTH))) {
        log_errorx("keys: refusing %s: other users may write it (mode %04o); make it 0600",
                   path, (unsigned)st.st_mode & 07777);
        return -EPERM;
    }
    return 0;
}

int keys_load_or_create(const char *path, struct key_pair *kp)
{
    char *text;
    size_t len;
    int rc;

    if ((rc = keys_check_place(path)) < 0)
        return rc;
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
