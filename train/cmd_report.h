/* cmd_report.h: the `moetrain report` subcommand (the page: train/report.h).
 *
 *   moetrain report RUN_DIR [RUN_DIR...] [--out FILE.html] [--force]
 *                   [--watch [--interval SECONDS]]      (train/report_watch.h)
 *   moetrain report --help
 */
#ifndef MOE_CMD_REPORT_H
#define MOE_CMD_REPORT_H

/* argv[0] is the first argument after "report". The output (default RUN_DIR/report.html,
 * required with several runs) goes through train/outguard.h with the runs' metrics.jsonl,
 * eval.jsonl and config.yaml as inputs; an existing file that is a page this writer made
 * counts as --force (a report is regenerated from its runs at any time; that is its normal
 * use), any other existing file needs --force. Two runs with the same base name are
 * labelled by their full paths. --watch keeps the page up to date until Ctrl-C or the
 * runs are done (train/report_watch.h). Returns the exit code: 0 ok (and --help, and a
 * watch that stopped), 1 user/environment error (printed with a hint), 2 bad command line
 * or refused output. */
int cmd_report(int argc, char **argv);

#endif
