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

#include "config.h"
#include "server.h"

/*
 * Splits `cmdline` into words, the rule documented for `run`:
 *   - words are separated by blanks (space, tab, newline);
 *   - '...' keeps everything inside literally;
 *   - "..." keeps everything inside literally except \" and \\ ;
 *   - outside quotes a backslash keeps the next character literally;
 *   - nothing is expanded ($HOME, *, ~ stay as written) and there are no
 *     operators: an unquoted | & ; < > ( ) ` $ or a word starting with # is an
 *     error ("shell syntax is not supported: write run = /bin/sh -c '…'"),
 *     quote it to pass it literally;
 *   - an unterminated quote, a trailing backslash and an empty line are errors.
 * Returns a NULL-terminated array (free with step_argv_free), or NULL with
 * *why set to a static explanation.
 */
char **step_split_argv(const char *cmdline, const char **why);
void step_argv_free(char **argv);

/*
 * Runs command step `step` (step->image == NULL) in step->root with the
 * parent's environment + srv_client_env for the step's database + step->env
 * (which wins); stdin is /dev/null.  A terminating signal is forwarded to the
 * step's process group and makes the step fail; after step->timeout (else
 * cfg->step_timeout; 0: none) it gets SIGTERM, then SIGKILL 10 s later.
 * Whatever is left in its process group afterwards is killed.
 * Returns 0 when it exits 0, -1 otherwise (logged).
 */
int step_run_command(const struct cfg_step *step, const struct cfg *cfg, const struct srv *s);

#endif
