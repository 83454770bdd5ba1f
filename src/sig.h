/*
 * sig — signal state and child reaping for pgstash as PID 1 during bootstrap
 * (the model is tini): the handled signals are blocked for the whole process
 * and read from a signalfd, so no handler ever runs and every wait loop can
 * poll on one descriptor.  Children we care about are "tracked": when any
 * wait reaps one, its status is kept until asked for; untracked zombies
 * (orphans re-parented to PID 1) are reaped and dropped.
 *
 * Not for: what to do about a signal.  Callers check sig_received and unwind
 * through their normal cleanup paths; main turns it into exit 128+N.
 */
#ifndef PGSTASH_SIG_H
#define PGSTASH_SIG_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

/* The first terminating signal received (SIGTERM, SIGINT, SIGHUP, SIGQUIT), or 0. */
extern volatile sig_atomic_t sig_received;

/*
 * Blocks TERM INT HUP QUIT CHLD and opens the signalfd.  Call once, early,
 * before any fork.  0 or -1 (logged).
 */
int sig_init(void);
/* In a forked child before exec: default dispositions, original mask, fd closed. */
void sig_child_reset(void);
/* The signalfd (O_NONBLOCK, O_CLOEXEC) to poll for POLLIN; -1 before sig_init. */
int sig_fd(void);
/*
 * Reads everything pending on the signalfd, records a terminating signal in
 * sig_received, reaps exited children.  Returns the last terminating signal
 * read now, or 0.  Never blocks.
 */
int sig_drain(void);

/* Starts keeping the exit status of `pid` when it is reaped. */
void sig_track(pid_t pid);
/*
 * If tracked `pid` has exited: true, *status set (wait(2) form), and the pid
 * is forgotten.  Reaps first.  Never blocks.
 */
bool sig_child_done(pid_t pid, int *status);
/*
 * Waits for tracked `pid` to exit for at most timeout_s seconds (< 0: no
 * limit).  When a terminating signal arrives it is recorded and, when
 * fwd_pgid > 0, forwarded to that process group (tini's habit); waiting goes
 * on.  Returns 0 with *status set, 1 on timeout, -1 on error (logged).
 * Before sig_init it waits on a pidfd of `pid` (or short naps without one),
 * so it returns about when the child exits.
 */
int sig_wait_child(pid_t pid, int *status, double timeout_s, pid_t fwd_pgid);
/* Sends `sig` to process group `pgid` (and to `pgid` itself if it is no group leader). */
void sig_forward(pid_t pgid, int sig);

#endif
