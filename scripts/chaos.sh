#!/usr/bin/env bash
# Runs the randomized fault schedule (TestChaos in cmd/gencluster) for
# ROUNDS rounds from SEED: each round one VAE job on 3 coordinators and 3-4
# workers as real processes, with FAULTS faults drawn from: SIGKILL and
# restart of a worker on a new port, SIGKILL of the raft leader, SIGSTOP /
# SIGCONT of a worker, a worker joining mid-job, a whole-cluster kill.
# Prints the summary (faults by kind, recovery median and worst, invariant
# violations) and leaves one JSON line per round in chaos-SEED.jsonl.
# AUTH is how the processes authenticate: none (default), certs (mutual
# TLS) or token (coordinators certificates, workers and clients the join
# token).
#
#   scripts/chaos.sh SEED ROUNDS [FAULTS] [STEPS] [AUTH]
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:?usage: scripts/chaos.sh SEED ROUNDS [FAULTS] [STEPS] [AUTH]}
rounds=${2:?usage: scripts/chaos.sh SEED ROUNDS [FAULTS] [STEPS] [AUTH]}
faults=${3:-4}
steps=${4:-1200}
auth=${5:-none}
report="$PWD/chaos-$seed.jsonl"
: > "$report"
log=$(mktemp)
status=0
go test ./cmd/gencluster -run '^TestChaos$' -count=1 -timeout 0 -v -args \
  -chaos.seed="$seed" -chaos.rounds="$rounds" -chaos.faults="$faults" -chaos.steps="$steps" \
  -chaos.auth="$auth" -chaos.report="$report" >"$log" 2>&1 || status=$?
grep -E 'chaos summary|recovery median|invariant violated|--- (PASS|FAIL)|^(ok|FAIL)' "$log" | grep -v 'time=' || true
echo "full log: $log; per-round records: $report"
exit "$status"
