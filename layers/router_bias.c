/* router_bias.c: the bias update of auxiliary-loss-free balancing. See router_bias.h. */
#include "layers/router_bias.h"

#include <math.h>

void router_bias_update(float *b, const double *count, int L, int E, float rate) {
    if (!(rate > 0.0f) || E <= 0) return;
    for (int l = 0; l < L; l++) {
        float *bl = b + (size_t)l * E;
        const double *cl = count + (size_t)l * E;
        double total = 0.0;
        for (int e = 0; e < E; e++) total += cl[e];
        /* sign(mean - load_i) = sign(total - E load_i): exact in doubles for integer counts
         * below 2^53 / E, so no rounding of the mean can flip a sign. */
        double sum = 0.0;
        for (int e = 0; e < E; e++) {
            const double d = total - (double)E * cl[e];
            bl[e] += d > 0.0 ? rate : d < 0.0 ? -rate : 0.0f;
            sum += (double)bl[e];
        }
        const double mean = sum / E;
        for (int e = 0; e < E; e++) bl[e] = (float)((double)bl[e] - mean);
    }
}

double router_bias_max_abs(const float *b, int E) {
    double m = 0.0;
    for (int e = 0; e < E; e++) m = fmax(m, fabs((double)b[e]));
    return m;
}
