/* metrics.h: the schema of run.dir/metrics.jsonl and run.dir/eval.jsonl, shared by their
 * writer (train/logger.c) and their reader (train/report_data.c).
 *
 * One JSON object per line. A step line (metrics.jsonl) holds METRIC_STEP, METRIC_TOKENS,
 * METRIC_TIME,
 * the per-step scalars from METRIC_LOSS to METRIC_MODEL_TFLOPS (a non-finite value is written
 * as null, so the file stays strict JSON), METRIC_SKIPPED and METRIC_GRAD_SPIKE, and, for a
 * MoE model with E <= 1024, the per-layer arrays (L = MoE layers). A validation line (both
 * files) holds METRIC_STEP, METRIC_TOKENS, METRIC_TIME and METRIC_VAL_LOSS only. A reader tells the two
 * apart by METRIC_LOSS / METRIC_VAL_LOSS. Losses are in nats per token, means over the
 * step's tokens on all ranks.
 * Compatibility: reports read runs written earlier; add keys, never rename or drop one.
 */
#ifndef MOE_METRICS_H
#define MOE_METRICS_H

/* both line kinds */
#define METRIC_STEP "step"                 /* optimizer steps done (a step line's own
                                              step included) */
#define METRIC_TOKENS "tokens"             /* training tokens seen so far, all ranks */
#define METRIC_TIME "time"                 /* wall-clock time the line was written: seconds
                                              since 1970-01-01 UTC (absent in older runs) */

/* step lines: scalars (number or null) */
#define METRIC_LOSS "loss"                 /* total: lm_loss + aux_loss + z_loss */
#define METRIC_LM_LOSS "lm_loss"           /* next-token cross-entropy */
#define METRIC_AUX_LOSS "aux_loss"         /* load-balancing loss x moe.aux_loss_coef */
#define METRIC_Z_LOSS "z_loss"             /* router z-loss x moe.z_loss_coef */
#define METRIC_LR "lr"                     /* learning rate of this step's update */
#define METRIC_GRAD_NORM "grad_norm"       /* global L2 norm of the gradients, before clipping */
#define METRIC_TOKENS_PER_S "tokens_per_s" /* training tokens per wall-clock second, all ranks */
#define METRIC_MFU "mfu"                   /* model FLOP rate / the sgemm rate measured
                                              once at start on this model's shapes. Not a
                                              bound: above 1 when the start-up measurement
                                              met a busy moment of a shared machine; compare
                                              runs by METRIC_MODEL_TFLOPS */
#define METRIC_STEP_TIME "step_time"       /* wall-clock seconds of the step */
#define METRIC_MODEL_TFLOPS "model_tflops" /* the model's achieved rate: FLOPs per token
                                              (model_flops_per_token_lora) x tokens_per_s,
                                              in TFLOP/s, all ranks (absent in older runs) */

/* step lines: booleans */
#define METRIC_SKIPPED "skipped"           /* non-finite loss or gradients: no update */
#define METRIC_GRAD_SPIKE "grad_spike"     /* grad_norm > train.spike_factor x its running mean */

/* step lines of a MoE model: per-layer arrays */
#define METRIC_EXPERT_LOAD "expert_load"   /* (L, E) share of the layer's routed slots per
                                              expert, before the capacity cut */
#define METRIC_LOAD_MAX_OVER_MEAN "load_max_over_mean"   /* (L) max share x E; 1 = balanced */
#define METRIC_DROPPED "dropped"           /* (L) slots dropped by the capacity limit, all ranks
                                              (expert choice: tokens no expert took) */
#define METRIC_ROUTER_ENTROPY "router_entropy"           /* (L) mean router entropy, nats */
#define METRIC_EXPERTS_PER_TOKEN "experts_per_token"     /* (L) mean experts per token (K for
                                                            top-k routing) */
#define METRIC_ROUTER_BIAS_MAX "router_bias_max"         /* (L) max |b| of the selection bias;
                                                            only with aux-loss-free balancing */

/* validation lines */
#define METRIC_VAL_LOSS "val_loss"         /* validation LM loss (no router noise) */

#endif
