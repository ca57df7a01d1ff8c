#!/usr/bin/env bash
# Peak resident memory of training, for docs/BENCHMARKS.md:
#  * `gencluster train --threads 2` (maximum resident set size, /usr/bin/time);
#  * a worker process (--threads 2) training the same job alone for one
#    coordinator on loopback, and that coordinator (VmHWM from /proc when the
#    job is done).
# Usage: scripts/bench_memory.sh [STEPS]   (default 300; prints a Markdown table)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-300}
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
bin=$tmp/gencluster
go build -o "$bin" ./cmd/gencluster
declare -A batch=([pixelcnn]=32 [vae]=128)
hwm() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }
port=$((20000 + RANDOM % 20000))

echo "| model | batch | steps | train peak RSS (MB) | worker peak RSS (MB) | coordinator peak RSS (MB) |"
echo "| --- | --- | --- | --- | --- | --- |"
for model in pixelcnn vae; do
  b=${batch[$model]}
  /usr/bin/time -o "$tmp/train.rss" -f '%M' "$bin" train --model "$model" --batch "$b" --steps "$steps" --threads 2 \
    --test-loss none --samples 0 --checkpoint-every 100 --out "$tmp/train-$model" >/dev/null 2>&1
  train_kb=$(tail -1 "$tmp/train.rss")

  c=127.0.0.1:$port w=127.0.0.1:$((port + 1)) h=127.0.0.1:$((port + 2))
  port=$((port + 3))
  "$bin" coordinator --id c1 --listen "$c" --peers "c1=$c" --data-dir "$tmp/c-$model" --http "$h" 2>"$tmp/c.log" &
  cpid=$!; pids+=("$cpid")
  "$bin" worker --join "$c" --listen "$w" --data-dir "$tmp/w-$model" --threads 2 2>"$tmp/w.log" &
  wpid=$!; pids+=("$wpid")
  for _ in $(seq 100); do "$bin" probe --http "$h" >/dev/null 2>&1 && break; sleep 0.2; done
  job=$("$bin" submit --coordinator "$c" --model "$model" --batch "$b" --steps "$steps" --samples 0 --checkpoint-every 100)
  until "$bin" status --coordinator "$c" --json | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)
j = s.get("job")  # the running or waiting job; none once ours has ended
sys.exit(0 if j is None or (j.get("id") == sys.argv[1] and j.get("state") in ("done", "failed", "cancelled")) else 1)' "$job"; do sleep 0.5; done
  worker_kb=$(hwm "$wpid") coord_kb=$(hwm "$cpid")
  kill "$wpid" "$cpid"; wait "$wpid" "$cpid" 2>/dev/null || true
  pids=()
  awk -v m="$model" -v b="$b" -v s="$steps" -v t="$train_kb" -v w="$worker_kb" -v c="$coord_kb" \
    'BEGIN { printf "| %s | %d | %d | %.0f | %.0f | %.0f |\n", m, b, s, t/1000, w/1000, c/1000 }'
done
