/*
 * fault.h - kill points for the fault-injection tests.
 *
 * tome_fault_point(NAME) marks a place where a crash must leave nothing
 * wrong behind: in the middle of an ingest, a store commit, a prefill, a
 * state file write, an upload.  Normally it does nothing.  With
 * TOME_TEST_DIE_AFTER=NAME:N in the environment, the N-th pass of the
 * process through the point named NAME kills the process with SIGKILL, as
 * `kill -9` would at exactly that moment; the tests
 * (tests/test_faults_*.sh) loop N over the passes and check what a
 * restart finds.  Whoever sets a daemon's environment controls the daemon
 * anyway, so the variable grants nothing; it is read once, at the first
 * pass through any point.
 */
#ifndef TOME_COMMON_FAULT_H
#define TOME_COMMON_FAULT_H

void tome_fault_point(const char *name);

#endif
