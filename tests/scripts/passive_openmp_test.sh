#!/usr/bin/env bash
# The processes that train wait passively: with OMP_WAIT_POLICY unset, `bpnas search/eval/pretrain`
# and `bpnas-worker` run with the OpenMP runtime's spin count at 0 (they re-execute themselves with
# OMP_WAIT_POLICY=passive), and a policy the user set is kept. The runtime prints its settings at
# start when OMP_DISPLAY_ENV=verbose; the last GOMP_SPINCOUNT line is the process that runs.
# Usage: passive_openmp_test.sh BPNAS BPNAS_WORKER
set -uo pipefail
bpnas=$1
worker=$2
failures=0

spincount() {  # the spin count of the process that ran last: "0", "300000", ...
  env -u OMP_WAIT_POLICY OMP_DISPLAY_ENV=verbose "$@" 2>&1 | grep GOMP_SPINCOUNT | tail -1 | sed "s/.*= '\(.*\)'.*/\1/"
}
expect() {  # expect WHAT ACTUAL WANTED
  if [ "$2" = "$3" ]; then
    echo "ok: $1 ($2)"
  else
    echo "FAIL: $1: got $2, wanted $3"
    failures=$((failures + 1))
  fi
}

expect "bpnas eval waits passively" "$(spincount "$bpnas" eval /nonexistent.bpq)" 0
expect "bpnas search waits passively" "$(spincount "$bpnas" search --spec /nonexistent.json)" 0
expect "bpnas-worker waits passively" "$(spincount "$worker" --help)" 0
# The user's choice wins: no re-exec, the runtime's active spin count.
active=$(OMP_WAIT_POLICY=active OMP_DISPLAY_ENV=verbose "$bpnas" eval /nonexistent.bpq 2>&1 | grep -c GOMP_SPINCOUNT)
expect "an explicit policy is not re-executed" "$active" 1
kept=$(OMP_WAIT_POLICY=active OMP_DISPLAY_ENV=verbose "$bpnas" eval /nonexistent.bpq 2>&1 | grep GOMP_SPINCOUNT | sed "s/.*= '\(.*\)'.*/\1/")
if [ "$kept" = "0" ]; then echo "FAIL: OMP_WAIT_POLICY=active was overridden"; failures=$((failures + 1)); else echo "ok: active kept (spin count $kept)"; fi
# Commands that do not train start once.
once=$(env -u OMP_WAIT_POLICY OMP_DISPLAY_ENV=verbose "$bpnas" help 2>&1 | grep -c GOMP_SPINCOUNT)
expect "bpnas help is not re-executed" "$once" 1

echo "$((6 - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
