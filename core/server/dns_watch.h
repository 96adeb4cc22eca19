/* server: the dns.extra_records_path file, read at start and followed while serving
 * (dns_watch.c). */
#ifndef HS_SERVER_DNS_WATCH_H
#define HS_SERVER_DNS_WATCH_H

#include "config/config.h"
#include "mapper/mapper.h"
#include "util/util.h"

/* How often the file is looked at: a change reaches the nodes within about this long. */
#define DNS_WATCH_INTERVAL_MS 1000

struct dns_watch;
typedef void (*dns_watch_fn)(void *arg);

/* Reads path (it must exist, be a file and parse: else an error, logged, and the server does
 * not start) and hands its records to m. */
int dns_watch_new(const char *path, struct mapper *m, struct dns_watch **out);
/* Follows the file on a thread of its own; changed(arg) runs there after new records went to
 * the mapper. */
int dns_watch_start(struct dns_watch *w, dns_watch_fn changed, void *arg);
/* SIGHUP: reads the file now, whatever its time stamps say. 1: new records applied (and
 * changed called); 0: the same records; <0: refused, logged, the records in force stay. */
int dns_watch_reload(struct dns_watch *w);
const char *dns_watch_path(const struct dns_watch *w);
/* Stops the thread (no call to changed after it returns). NULL is fine. */
void dns_watch_free(struct dns_watch *w);

#endif
