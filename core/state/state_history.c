/* state: the online count over the last 24 hours, a ring of one point per step. */
#include <pthread.h>

#include "state/state_internal.h"

void state_history_add(struct state_history *h, int64_t now, uint32_t online)
{
    int64_t step = now - now % STATE_HISTORY_STEP_US;
    struct state_history_point *newest;

    if (now < 0)
        return;
    while (h->n && h->p[(h->head + h->n - 1) % STATE_HISTORY_POINTS].at > step)
        h->n--;
    if (h->n) {
        newest = &h->p[(h->head + h->n - 1) % STATE_HISTORY_POINTS];
        if (step == newest->at) {
            newest->online = online;
            return;
        }
    }
    if (h->n == STATE_HISTORY_POINTS)
        h->head = (h->head + 1) % STATE_HISTORY_POINTS;
    else
        h->n++;
    h->p[(h->head + h->n - 1) % STATE_HISTORY_POINTS] =
        (struct state_history_point){ .at = step, .online = online };
}

size_t state_history_read(const struct state_history *h,
                          struct state_history_point out[STATE_HISTORY_POINTS])
{
    for (size_t i = 0; i < h->n; i++)
        out[i] = h->p[(h->head + i) % STATE_HISTORY_POINTS];
    return h->n;
}

void state_sample_online(struct state *s, int64_t now)
{
    uint32_t online = 0;

    pthread_rwlock_rdlock(&s->lock);
    for (size_t i = 0; i < s->nnodes; i++)
        online += s->nodes[i]->online;
    pthread_rwlock_unlock(&s->lock);
    pthread_mutex_lock(&s->hmu);
    state_history_add(&s->history, now, online);
    pthread_mutex_unlock(&s->hmu);
}

size_t state_online_history(struct state *s,
                            struct state_history_point out[STATE_HISTORY_POINTS])
{
    size_t n;

    pthread_mutex_lock(&s->hmu);
    n = state_history_read(&s->history, out);
    pthread_mutex_unlock(&s->hmu);
    return n;
}
