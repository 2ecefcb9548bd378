/* test_schedule.c: the learning-rate schedules (optim/schedule.h) against values worked out
 * by hand in the comments, at chosen steps: warmup, the start and end of each decay, a
 * point inside it, past the end, and the edge cases (no warmup, warmup overlapping the
 * decay, a decay shorter than one step). The cosine is also compared bit for bit with the
 * schedule as it was before the other kinds existed (a copy below): runs that do not set
 * optim.schedule must train exactly as before.
 *
 * Tolerances: every schedule computes in double and rounds to float once, so a value is
 * within half a float ulp of the exact one; values here are <= 2, so 1e-6 (about 8 ulps at
 * 1.0) allows the rounding of the hand-written float constants and nothing more: a one-step
 * shift of a linear decay over 20 steps moves lr by 4.5e-2, far outside it.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "autograd/blas.h"
#include "optim/schedule.h"

#define EQF(a, b) ck_assert_double_eq_tol((double)(a), (double)(b), 1e-6)

/* The cosine schedule before optim.schedule existed (optim/adamw.c at the parent commit). */
static float old_cosine(const LrSchedule *s, long step) {
    if (s->warmup > 0 && step < s->warmup)
        return s->lr * (float)(step + 1) / (float)s->warmup;
    long span = s->total - 1 - s->warmup;
    if (span <= 0) return s->lr;
    double progress = (double)(step - s->warmup) / (double)span;
    if (progress > 1.0) progress = 1.0;
    double cosine = 0.5 * (1.0 + cos(M_PI * progress));
    return (float)((double)s->min_lr + ((double)s->lr - (double)s->min_lr) * cosine);
}

/* (Break checked: changing the cosine expression to min + (lr - min) * (1 + cos) / 2 in
 * float fails the bit-identity loop.) */
START_TEST(test_cosine_by_hand) {
    LrSchedule s = {.lr = 1.0f, .min_lr = 0.1f, .warmup = 10, .total = 111};
    ck_assert_int_eq(s.kind, LR_COSINE);   /* zero-initialised = cosine, the default */
    /* warmup: (step+1)/10 */
    EQF(lr_at(&s, 0), 0.1f);
    EQF(lr_at(&s, 4), 0.5f);
    EQF(lr_at(&s, 9), 1.0f);
    /* cosine over steps 10..110 (span 100): start at lr, midpoint (step 60) halfway,
     * end at min_lr: 0.1 + 0.9 * 0.5 * (1 + cos(pi * p)) */
    EQF(lr_at(&s, 10), 1.0f);
    EQF(lr_at(&s, 60), 0.55f);
    EQF(lr_at(&s, 35), 0.1 + 0.9 * 0.5 * (1.0 + cos(M_PI * 0.25)));
    EQF(lr_at(&s, 110), 0.1f);
    EQF(lr_at(&s, 500), 0.1f);   /* past the end: stays at min */
    LrSchedule nowarm = {.lr = 2.0f, .min_lr = 0.0f, .warmup = 0, .total = 3};
    EQF(lr_at(&nowarm, 0), 2.0f);
    EQF(lr_at(&nowarm, 1), 1.0f);
    EQF(lr_at(&nowarm, 2), 0.0f);
    /* bit for bit the schedule of before, over every step of several shapes */
    const long shapes[][2] = {{0, 1}, {0, 2}, {10, 111}, {100, 1000}, {5, 5}, {7, 3}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        LrSchedule c = {.lr = 3e-3f, .min_lr = 3e-4f, .warmup = shapes[k][0],
                        .total = shapes[k][1]};
        for (long t = 0; t < c.total + 5; t++) {
            const float a = lr_at(&c, t), b = old_cosine(&c, t);
            ck_assert_msg(a == b, "cosine (warmup %ld, total %ld) step %ld: %.9g, was %.9g",
                          c.warmup, c.total, t, (double)a, (double)b);
        }
    }
}
END_TEST

/* Linear: lr right after warmup, min_lr at step total - 1, straight in between.
 * (Break checked: p = (step - warmup) / (total - warmup) gives 0.777 at step 35.) */
START_TEST(test_linear_by_hand) {
    LrSchedule s = {.lr = 1.0f, .min_lr = 0.1f, .warmup = 10, .total = 111, .kind = LR_LINEAR};
    EQF(lr_at(&s, 0), 0.1f);             /* the same warmup as every kind */
    EQF(lr_at(&s, 9), 1.0f);
    EQF(lr_at(&s, 10), 1.0f);            /* p = 0 */
    EQF(lr_at(&s, 35), 0.775f);          /* p = 1/4: 1 - 0.9/4 */
    EQF(lr_at(&s, 60), 0.55f);           /* p = 1/2 */
    EQF(lr_at(&s, 109), 0.109f);         /* p = 99/100: 0.1 + 0.9 * 0.01 */
    EQF(lr_at(&s, 110), 0.1f);           /* the last step */
    EQF(lr_at(&s, 200), 0.1f);           /* past the end */
    LrSchedule nowarm = {.lr = 2.0f, .min_lr = 0.5f, .total = 4, .kind = LR_LINEAR};
    EQF(lr_at(&nowarm, 0), 2.0f);
    EQF(lr_at(&nowarm, 1), 1.5f);        /* span 3: steps of 0.5 */
    EQF(lr_at(&nowarm, 3), 0.5f);
}
END_TEST

/* WSD: warmup, lr until the last D = round(f total) steps, which fall linearly so that each
 * is below lr and the last one is at min_lr.
 * (Break checked: p = (step - S) / D instead of (step - S + 1) / D keeps step 80 at lr and
 * ends at 0.145 instead of min_lr; rounding D with floor gives 1 instead of 2 steps for
 * f = 0.015, total = 100.) */
START_TEST(test_wsd_by_hand) {
    LrSchedule s = {.lr = 1.0f, .min_lr = 0.1f, .warmup = 10, .total = 100, .kind = LR_WSD,
                    .decay_fraction = 0.2};
    ck_assert_int_eq(lr_wsd_decay_steps(&s), 20);   /* D = 20: decay from step S = 80 */
    EQF(lr_at(&s, 0), 0.1f);             /* warmup */
    EQF(lr_at(&s, 9), 1.0f);
    EQF(lr_at(&s, 10), 1.0f);            /* stable */
    EQF(lr_at(&s, 79), 1.0f);            /* the last stable step */
    EQF(lr_at(&s, 80), 0.955f);          /* p = 1/20: 1 - 0.9/20 */
    EQF(lr_at(&s, 89), 0.55f);           /* p = 10/20 */
    EQF(lr_at(&s, 98), 0.145f);          /* p = 19/20 */
    EQF(lr_at(&s, 99), 0.1f);            /* the last step at min_lr */
    EQF(lr_at(&s, 150), 0.1f);           /* past the end */
    /* D rounds to nearest (0.2 x 1000 = 200 exactly, not 201), at least 1, at most total */
    LrSchedule r = {.lr = 1.0f, .total = 1000, .kind = LR_WSD, .decay_fraction = 0.2};
    ck_assert_int_eq(lr_wsd_decay_steps(&r), 200);
    r.total = 100;
    r.decay_fraction = 0.015;            /* 1.5 -> 2 */
    ck_assert_int_eq(lr_wsd_decay_steps(&r), 2);
    r.decay_fraction = 0.001;            /* 0.1 -> 0 -> at least 1 */
    ck_assert_int_eq(lr_wsd_decay_steps(&r), 1);
    EQF(lr_at(&r, 98), 1.0f);            /* one decay step: only the last one falls */
    EQF(lr_at(&r, 99), 0.0f);
    r.decay_fraction = 1.0;              /* the whole run decays */
    ck_assert_int_eq(lr_wsd_decay_steps(&r), 100);
    EQF(lr_at(&r, 0), 0.99f);            /* p = 1/100 */
    /* warmup longer than the stable phase: the decay starts after warmup, S = 90 */
    LrSchedule o = {.lr = 1.0f, .min_lr = 0.0f, .warmup = 90, .total = 100, .kind = LR_WSD,
                    .decay_fraction = 0.2};
    EQF(lr_at(&o, 89), 1.0f);            /* the last warmup step */
    EQF(lr_at(&o, 90), 0.9f);            /* p = 1/10 */
    EQF(lr_at(&o, 99), 0.0f);
    /* warmup covering the run: nothing left to decay */
    LrSchedule w = {.lr = 1.0f, .warmup = 100, .total = 100, .kind = LR_WSD,
                    .decay_fraction = 0.2};
    EQF(lr_at(&w, 99), 1.0f);
    EQF(lr_at(&w, 100), 1.0f);
}
END_TEST

START_TEST(test_constant_by_hand) {
    LrSchedule s = {.lr = 0.5f, .min_lr = 0.1f, .warmup = 4, .total = 50, .kind = LR_CONSTANT};
    EQF(lr_at(&s, 0), 0.125f);           /* warmup: 0.5 (step + 1) / 4 */
    EQF(lr_at(&s, 3), 0.5f);
    EQF(lr_at(&s, 4), 0.5f);
    EQF(lr_at(&s, 49), 0.5f);            /* min_lr is not used */
    EQF(lr_at(&s, 1000), 0.5f);
}
END_TEST

/* Invariants over every step of a few shapes: the warmup is the same for every kind;
 * after it no schedule rises, and each stays within [min_lr, lr]. */
START_TEST(test_schedule_invariants) {
    const LrKind kinds[] = {LR_COSINE, LR_WSD, LR_LINEAR, LR_CONSTANT};
    const long shapes[][2] = {{0, 1}, {3, 10}, {10, 37}, {50, 60}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (size_t i = 0; i < 4; i++) {
            LrSchedule s = {.lr = 2e-3f, .min_lr = 2e-4f, .warmup = shapes[k][0],
                            .total = shapes[k][1], .kind = kinds[i], .decay_fraction = 0.3};
            LrSchedule c = s;
            c.kind = LR_COSINE;
            float prev = INFINITY;
            for (long t = 0; t < s.total + 3; t++) {
                const float v = lr_at(&s, t);
                if (t < s.warmup) {
                    ck_assert_msg(v == lr_at(&c, t), "kind %d warmup step %ld", kinds[i], t);
                    continue;
                }
                ck_assert_msg(v <= prev, "kind %d rises at step %ld", kinds[i], t);
                ck_assert_msg(v >= s.min_lr && v <= s.lr, "kind %d step %ld: %g", kinds[i], t,
                              (double)v);
                prev = v;
            }
        }
}
END_TEST

int main(int argc, char **argv) {
    (void)argc;
    blas_init(argv);   /* start the BLAS as moetrain does: the kernels users run */
    Suite *s = suite_create("schedule");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"cosine", test_cosine_by_hand}, {"linear", test_linear_by_hand},
        {"wsd", test_wsd_by_hand}, {"constant", test_constant_by_hand},
        {"invariants", test_schedule_invariants},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
