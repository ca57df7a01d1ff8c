#!/usr/bin/env bash
# Side-by-side all-reduce benchmark: gencluster's ring over gRPC vs
# torch.distributed gloo (scripts/torch_reference.py allreduce), N processes
# on loopback, alternating runs; plus the loopback bound
# 2(N-1)/N * S / (single-stream loopback bandwidth).
# Usage: scripts/bench_allreduce.sh [ROUNDS] [ITERS]   (defaults 3, 10)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
iters=${2:-10}
bin=$(mktemp -d)/gencluster
go build -o "$bin" ./cmd/gencluster
results=$(mktemp)
for r in $(seq "$rounds"); do
  for n in 2 4; do
    for s in 1 16 64; do
      ours=$("$bin" bench allreduce --world "$n" --mib "$s" --iters "$iters" --loopback --json |
        /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["median_seconds"], j["bound_seconds"])')
      gloo=$(/usr/bin/python3 scripts/torch_reference.py allreduce "$n" "$s" "$iters" | sed -n 's/.*median_s=\([0-9.]*\).*/\1/p')
      echo "$n $s $ours $gloo" >>"$results"
    done
  done
done
/usr/bin/python3 - "$results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(lambda: ([], [], []))
for line in open(sys.argv[1]):
    n, s, o, b, g = line.split()
    k = (int(n), int(s)); rows[k][0].append(float(o)); rows[k][1].append(float(b)); rows[k][2].append(float(g))
print("| N | MiB | gencluster median s | gloo median s | gloo / gencluster | loopback bound s | gencluster busbw MB/s | runs |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (n, s), (o, b, g) in sorted(rows.items()):
    mo, mb, mg = statistics.median(o), statistics.median(b), statistics.median(g)
    bus = 2*(n-1)/n * s * 2**20 / mo / 1e6
    print(f"| {n} | {s} | {mo:.4f} | {mg:.4f} | {mg/mo:.2f} | {mb:.4f} | {bus:.0f} | {len(o)} |")
PY
