/* ep_gather.c: see ep_gather.h. */
#include "parallel/ep_gather.h"

#include <string.h>

void ep_gather_experts(const ParamSet *local, ParamSet *full, float *xfer, const Comm *c) {
    const ParamBlock *eb = &local->blocks[PBLOCK_EXPERT];
    /* values: n floats per block; moments: gn (trainable tensors only, at goff) */
    if (c->rank > 0 && c->rank < c->ep) {
        MPI_Send(eb->data, (int)eb->n, MPI_FLOAT, 0, 1, c->world);
        MPI_Send(eb->m, (int)eb->gn, MPI_FLOAT, 0, 2, c->world);
        MPI_Send(eb->v, (int)eb->gn, MPI_FLOAT, 0, 3, c->world);
        return;
    }
    if (c->rank != 0) return;
    for (int b = 0; b < 3; b++) {   /* dense block: same layout in both stores */
        const ParamBlock *d = &local->blocks[PBLOCK_DENSE];
        ParamBlock *fd = &full->blocks[PBLOCK_DENSE];
        float *from = b == 0 ? d->data : b == 1 ? d->m : d->v;
        float *to = b == 0 ? fd->data : b == 1 ? fd->m : fd->v;
        memcpy(to, from, (b == 0 ? d->n : d->gn) * sizeof(float));
    }
    ParamBlock *fe = &full->blocks[PBLOCK_EXPERT];
    for (int q = 0; q < c->ep; q++) {
        float *buf[3];
        for (int b = 0; b < 3; b++) buf[b] = xfer + (size_t)b * eb->n;
        if (q == 0) {
            memcpy(buf[0], eb->data, eb->n * sizeof(float));
            memcpy(buf[1], eb->m, eb->gn * sizeof(float));
            memcpy(buf[2], eb->v, eb->gn * sizeof(float));
        } else {
            for (int b = 0; b < 3; b++)
                MPI_Recv(buf[b], (int)(b == 0 ? eb->n : eb->gn), MPI_FLOAT, q, b + 1, c->world,
                         MPI_STATUS_IGNORE);
        }
        for (int i = 0; i < local->count; i++) {
            const Param *p = &local->p[i];
            if (p->block != PBLOCK_EXPERT) continue;
            const Param *fp = &full->p[i];
            size_t n = p->t.n;   /* rank q's slice: experts q*E/P .. */
            memcpy(fe->data + fp->off + (size_t)q * n, buf[0] + p->off, n * sizeof(float));
            if (!p->trainable) continue;
            memcpy(fe->m + fp->goff + (size_t)q * n, buf[1] + p->goff, n * sizeof(float));
            memcpy(fe->v + fp->goff + (size_t)q * n, buf[2] + p->goff, n * sizeof(float));
        }
    }
}
