#!/usr/bin/env bash
# The processes that train spin only briefly (common/openmp_wait.h): with neither OMP_WAIT_POLICY
# nor GOMP_SPINCOUNT set, `bpnas search/eval/pretrain` and `bpnas-worker` run with the OpenMP
# runtime's spin count at 3000 (they re-execute themselves with GOMP_SPINCOUNT set), and a setting
# the user made is kept. The runtime prints its settings at start when OMP_DISPLAY_ENV=verbose; the
# last GOMP_SPINCOUNT line is the process that ran.
# Usage: openmp_wait_test.sh BPNAS BPNAS_WORKER
set -uo pipefail
bpnas=$1
worker=$2
passed=0
failed=0

# The spin count of the process that ran last ("1000", "300000", ...), and how many processes ran.
spincount() { OMP_DISPLAY_ENV=verbose "$@" 2>&1 | grep GOMP_SPINCOUNT | tail -1 | sed "s/.*= '\(.*\)'.*/\1/"; }
starts() { OMP_DISPLAY_ENV=verbose "$@" 2>&1 | grep -c GOMP_SPINCOUNT; }
expect() {  # expect WHAT ACTUAL WANTED
  if [ "$2" = "$3" ]; then
    echo "ok: $1 ($2)"
    passed=$((passed + 1))
  else
    echo "FAIL: $1: got '$2', wanted '$3'"
    failed=$((failed + 1))
  fi
}
unset OMP_WAIT_POLICY GOMP_SPINCOUNT

expect "bpnas eval spins briefly" "$(spincount "$bpnas" eval /nonexistent.bpq)" 3000
expect "bpnas search spins briefly" "$(spincount "$bpnas" search --spec /nonexistent.json)" 3000
expect "bpnas pretrain spins briefly" "$(spincount "$bpnas" pretrain --spec /nonexistent.json)" 3000
expect "bpnas-worker spins briefly" "$(spincount "$worker" --help)" 3000
expect "bpnas search starts twice (the re-exec)" "$(starts "$bpnas" search --spec /nonexistent.json)" 2
# The user's choice wins, without a re-exec.
expect "OMP_WAIT_POLICY=active is kept" "$(OMP_WAIT_POLICY=active spincount "$bpnas" eval /nonexistent.bpq)" 30000000000
expect "OMP_WAIT_POLICY=passive is kept" "$(OMP_WAIT_POLICY=passive spincount "$bpnas" eval /nonexistent.bpq)" 0
expect "GOMP_SPINCOUNT is kept" "$(GOMP_SPINCOUNT=77 spincount "$worker" --help)" 77
expect "a user's setting is not re-executed" "$(OMP_WAIT_POLICY=active starts "$bpnas" eval /nonexistent.bpq)" 1
# Commands that do not train start once, with the runtime's default.
expect "bpnas help starts once" "$(starts "$bpnas" help)" 1

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
