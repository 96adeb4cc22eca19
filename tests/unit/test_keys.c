#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keys/keys.h"
#include "util/util.h"

Test(keys, format_parse_round_trip)
{
    struct key_pair kp;
    uint8_t back[KEY_LEN];
    char text[KEY_TEXT_MAX];

    keys_generate(&kp);
    keys_format("mkey:", kp.pub, text);
    cr_assert_eq(strlen(text), 5 + 64);
    cr_assert_eq(keys_parse("mkey:", text, back), 0);
    cr_assert(memcmp(back, kp.pub, KEY_LEN) == 0);
    cr_assert_eq(keys_parse("nodekey:", text, back), -EINVAL);
    text[10] = 'z';
    cr_assert_eq(keys_parse("mkey:", text, back), -EINVAL);
    cr_assert_eq(keys_parse("mkey:", "mkey:abcd", back), -EINVAL);
}

Test(keys, file_created_0600_and_reloaded)
{
    char dir[] = "/tmp/hs-keys-XXXXXX", path[128];
    struct key_pair a, b;
    struct stat st;
    char *text;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/sub/noise.key", dir);
    cr_assert_eq(keys_load_or_create(path, &a), 0);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(hs_read_file(path, 4096, &text, NULL), 0);
    cr_assert(hs_has_prefix(text, "privkey:"), "%s", text);
    free(text);
    cr_assert_eq(keys_load_or_create(path, &b), 0);
    cr_assert(memcmp(a.priv, b.priv, KEY_LEN) == 0);
    cr_assert(memcmp(a.pub, b.pub, KEY_LEN) == 0);
    unlink(path);
    snprintf(path, sizeof(path), "%s/sub", dir);
    rmdir(path);
    rmdir(dir);
}

Test(keys, malformed_file_refused_and_kept)
{
    char path[] = "/tmp/hs-key-XXXXXX";
    struct key_pair kp;
    char *text;
    int fd = mkstemp(path);

    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "privkey:1234\n", 13), 13);
    close(fd);
    cr_assert_eq(keys_load_or_create(path, &kp), -EINVAL);
    cr_assert_eq(hs_read_file(path, 4096, &text, NULL), 0);
    cr_assert_str_eq(text, "privkey:1234\n");
    free(text);
    unlink(path);
}
