#!/usr/bin/env bash
# Leader failover time of a 3-coordinator group on loopback: SIGKILL the
# raft leader's process and time until `status` through a survivor names a
# new leader. Usage: scripts/bench_failover.sh [ROUNDS] (default 5); prints
# each round's seconds and the median.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
tmp=$(mktemp -d)
bin=$tmp/gencluster
go build -o "$bin" ./cmd/gencluster
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
base=$((17100 + RANDOM % 500))
peers="c1=127.0.0.1:$base,c2=127.0.0.1:$((base+1)),c3=127.0.0.1:$((base+2))"
declare -A pid
start() { # id index
  "$bin" coordinator --id "$1" --listen "127.0.0.1:$((base+$2))" --peers "$peers" --data-dir "$tmp/$1" --log-level warn 2>>"$tmp/$1.log" &
  pid[$1]=$!
}
leader() { "$bin" status --coordinator "$1" --json --timeout 2s 2>/dev/null |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])' 2>/dev/null || true; }
for i in 0 1 2; do start "c$((i+1))" "$i"; done
times=()
for r in $(seq "$rounds"); do
  until l=$(leader "127.0.0.1:$base,127.0.0.1:$((base+1)),127.0.0.1:$((base+2))") && [ -n "$l" ]; do sleep 0.1; done
  idx=$(( ${l##*:} - base )); id="c$((idx+1))"
  survivors=$(for i in 0 1 2; do if [ "$i" != "$idx" ]; then printf '127.0.0.1:%d,' $((base+i)); fi; done)
  t0=$(date +%s.%N)
  kill -9 "${pid[$id]}"
  wait "${pid[$id]}" 2>/dev/null || true
  until nl=$(leader "${survivors%,}") && [ -n "$nl" ] && [ "$nl" != "$l" ]; do sleep 0.02; done
  t1=$(date +%s.%N)
  times+=("$(echo "$t1 - $t0" | bc)")
  echo "round $r: killed $id ($l), new leader $nl after ${times[-1]} s"
  start "$id" "$idx"   # restart from its data dir (no --peers needed, same list given)
  sleep 2
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print "median failover: " a[int((NR+1)/2)] " s over " NR " rounds"}'
