/* cmd_plan.h: the `moetrain plan` subcommand: what a config's training step holds, sends
 * and costs on a stated cluster, before anything runs.
 *
 *   moetrain plan CONFIG [--set section.key=value ...] [--ranks R] [--nodes N]
 *                 [--net-gbps X] [--net-us Y] [--shm-gbs X] [--shm-us Y]
 *                 [--node-tflops Z] [--hidden H]
 *
 * Prints the layout (expert parallel size, replicas, ranks per node), the memory plan of a
 * rank (train/memplan.h), the bytes each rank sends per optimizer step by kind of
 * collective and the bytes leaving each node, and the predicted step time split into
 * compute and communication (train/costmodel.h; docs/scaling.md derives every formula).
 */
#ifndef MOE_CMD_PLAN_H
#define MOE_CMD_PLAN_H

/* argv holds the words after `moetrain plan`. Returns the exit status: 0 ok (or --help),
 * 1 a config or layout error (message and hint on stderr), 2 a bad command line. */
int cmd_plan(int argc, char **argv);

#endif
