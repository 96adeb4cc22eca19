/* bcrypt through libcrypt (libxcrypt). headscale stored its API keys and pre-auth keys as
 * bcrypt hashes; keys brought over from its database are checked with these, so the keys an
 * operator handed out keep working. New keys use the keyed hash of core/auth instead. */
#include <crypt.h>
#include <sodium.h>
#include <string.h>

#include "util/util.h"

#define BCRYPT_COST 10 /* headscale's bcrypt.DefaultCost */

bool hs_bcrypt_is_hash(const char *s)
{
    return s && s[0] == '$' && s[1] == '2' && (s[2] == 'a' || s[2] == 'b' || s[2] == 'y') &&
           s[3] == '$' && strlen(s) == HS_BCRYPT_LEN;
}

/* crypt_r into a heap crypt_data (32 KiB, too much for a worker's stack) → 0 and out filled,
 * or -EINVAL. setting is a salt or a whole hash. */
static int bcrypt_run(const char *secret, size_t len, const char *setting,
                      char out[HS_BCRYPT_LEN + 1])
{
    struct crypt_data *cd;
    char pw[HS_BCRYPT_MAX_SECRET + 1];
    const char *res;
    int rc = -EINVAL;

    if (len > HS_BCRYPT_MAX_SECRET || memchr(secret, '\0', len))
        return -EINVAL; /* bcrypt reads 72 bytes at most, up to a NUL */
    memcpy(pw, secret, len);
    pw[len] = '\0';
    cd = hs_xcalloc(1, sizeof(*cd));
    res = crypt_r(pw, setting, cd);
    if (res && res[0] != '*' && strlen(res) == HS_BCRYPT_LEN) {
        memcpy(out, res, HS_BCRYPT_LEN + 1);
        rc = 0;
    }
    sodium_memzero(cd, sizeof(*cd));
    sodium_memzero(pw, sizeof(pw));
    free(cd);
    return rc;
}

int hs_bcrypt_verify(const char *secret, size_t len, const char *hash)
{
    char got[HS_BCRYPT_LEN + 1];
    int rc;

    if (!hs_bcrypt_is_hash(hash))
        return -EINVAL;
    if (bcrypt_run(secret, len, hash, got) < 0)
        return -EACCES;
    rc = sodium_memcmp(got, hash, HS_BCRYPT_LEN) == 0 ? 0 : -EACCES;
    sodium_memzero(got, sizeof(got));
    return rc;
}

int hs_bcrypt_hash(const char *secret, size_t len, char out[HS_BCRYPT_LEN + 1])
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];

    if (!crypt_gensalt_rn("$2b$", BCRYPT_COST, NULL, 0, salt, sizeof(salt)))
        return -EIO;
    return bcrypt_run(secret, len, salt, out);
}
