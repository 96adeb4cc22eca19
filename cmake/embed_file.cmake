# Embeds IN as a NUL-terminated C string named VAR in OUT.
file(READ ${IN} text HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${text}")
file(WRITE ${OUT}.tmp "/* Generated from ${IN} by cmake/embed_file.cmake. */\nconst char ${VAR}[] = { ${bytes} 0 };\n")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
