/* The table of embedded migrations, generated from sql/<backend>/NNNN_name.sql by
 * cmake/embed_sql.cmake. Ends with an entry whose backend is NULL. */
#ifndef HS_STORE_MIGRATIONS_H
#define HS_STORE_MIGRATIONS_H

struct migration {
    const char *backend; /* "sqlite" or "postgres" */
    int version;
    const char *name;
    const char *sql;
};

extern const struct migration store_migrations[];

#endif
