/*
 * steps — command steps: split a step's `run` line into argv by one
 * documented rule and run it against the temporary server, its output
 * prefixed "[step NAME] " on stderr, with signals forwarded, a timeout and
 * nothing left running afterwards.
 *
 * Not for: container steps (docker), choosing which steps run (the front end).
 */
#ifndef PGSTASH_STEPS_H
#define PGSTASH_STEPS_H

#include <stddef.h>

struct cfg;
struct cfg_step;
struct srv;

/*
 * Runs command step `step` (step->image == NULL; its run line split by
 * proc_split_argv) in step->root with the parent's environment +
 * srv_client_env for the step's database + step->env (which wins); stdin is /dev/null.  A terminating signal is forwarded to the
 * step's process group and makes the step fail; after step->timeout (else
 * cfg->step_timeout; 0: none) it gets SIGTERM, then SIGKILL 10 s later.
 * Whatever is left in its process group afterwards is killed.
 * Returns 0 when it exits 0, -1 otherwise (logged).
 */
int step_run_command(const struct cfg_step *step, const struct cfg *cfg, const struct srv *s);

/*
 * Runs the n command steps (at most 64) at once, each as step_run_command
 * does, under one poll loop: outputs prefixed per step, signals forwarded to
 * every group.  The first step that fails stops the others (SIGTERM, then
 * SIGKILL 10 s later; each logged as stopped because of it).  0 when all
 * exit 0, -1 otherwise (logged).
 */
int step_run_commands(const struct cfg_step *const *steps, size_t n, const struct cfg *cfg, const struct srv *s);

#endif
