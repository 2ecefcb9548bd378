/* report_config.h: the configuration part of the report page (train/report.h): one run's
 * config.yaml as it is; for several runs only the keys whose values differ, as a table
 * (key, then the value in each run), not every run's whole file.
 *
 * Each run's config.yaml is read with the config reader (configs/config.h
 * config_load_text: defaults filled in, so a key left out and a key set to its default
 * compare equal, and comments, key order and the spelling of numbers do not matter) and
 * written back as the complete effective config (config_to_yaml), whose values are then
 * compared key by key, so every key of the key table is compared without code here. A run
 * without config.yaml, or whose config.yaml this moetrain cannot read (a key renamed since,
 * say), gets "?" in its column and a note with the reader's message; it is left out of the
 * comparison.
 * Non-goals: validating the configs (config_validate: a finished run's config was valid
 * when it ran), diffing anything but config.yaml.
 */
#ifndef MOE_REPORT_CONFIG_H
#define MOE_REPORT_CONFIG_H

#include <stdio.h>

#include "train/report_data.h"

/* The "Configuration" section for runs[0..nr) (each loaded; r->config may be NULL).
 * nr == 1: <pre class="config"> with the file's text. nr > 1: <table class="config-diff">
 * with a header row (key, then each run's name) and one <tr data-key="section.key"> per
 * differing key, values as config_to_yaml writes them ("(not set)" for a key it leaves
 * out); or a note that the configs are identical. */
void report_config_section(FILE *f, const RunData *runs, int nr);

#endif
