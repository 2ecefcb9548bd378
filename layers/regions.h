/* regions.h: the profile regions of a forward/backward (Tape.profile, tape_region):
 * what bench_train's time split is made of. The names are defined in model.c. */
#ifndef MOE_REGIONS_H
#define MOE_REGIONS_H

enum { REGION_OTHER = 0, REGION_ATTENTION, REGION_ROUTER, REGION_EXPERTS, REGION_HEAD,
       REGION_COUNT };
extern const char *const model_region_names[REGION_COUNT];

#endif
