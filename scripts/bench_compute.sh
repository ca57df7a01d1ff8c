#!/usr/bin/env bash
# Side-by-side compute benchmark: gencluster bench compute vs PyTorch
# (scripts/torch_reference.py compute, Debian's python3-torch) at the same
# model, batch and threads, alternating runs so that both see the same
# machine state.
# Usage: scripts/bench_compute.sh [ROUNDS [MODEL:BATCH:STEPS ...]]
#   ROUNDS: default 3. The models default to pixelcnn:32:20 vae:128:200;
#   MODEL is any torch_reference.py model: pixelcnn, vae, pixelrnn, ae,
#   pixelcnn/256, pixelrnn/256. Prints a Markdown table: images/s of both,
#   their ratio, gencluster's useful GFLOP/s and its fraction of the FMA
#   peak that bench compute measures after each run.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(pixelcnn:32:20 vae:128:200)
bin=$(mktemp -d)/gencluster
go build -o "$bin" ./cmd/gencluster
export MNIST_DIR=$PWD/dataset/mnistdata
results=$(mktemp)
for r in $(seq "$rounds"); do
  for run in "${runs[@]}"; do
    IFS=: read -r model b s <<<"$run"
    name=${model%/*} levels=0
    [ "$name" = "$model" ] || levels=${model#*/}
    for t in 1 2; do
      ours=$("$bin" bench compute --model "$name" --levels "$levels" --batch "$b" --threads "$t" --steps "$s" --json |
        /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["images_per_sec"], r["gflops"], r["fraction_of_peak"])')
      torch=$(/usr/bin/python3 scripts/torch_reference.py compute "$model" "$b" "$s" "$t" |
        sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p')
      echo "$model $b $t $ours $torch" >>"$results"
    done
  done
done
/usr/bin/python3 - "$results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(lambda: ([], []))  # (gencluster (img/s, GFLOP/s, fraction)), PyTorch img/s
for line in open(sys.argv[1]):
    m, b, t, o, g, f, p = line.split()
    r = rows[(m, int(b), int(t))]
    r[0].append((float(o), float(g), float(f))); r[1].append(float(p))
print("| model | batch | threads | gencluster img/s (median) | PyTorch img/s (median) | ratio | gencluster GFLOP/s | fraction of FMA peak | runs |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for (m, b, t), (o, p) in sorted(rows.items()):
    mo, mp = statistics.median(x[0] for x in o), statistics.median(p)
    mg, mf = statistics.median(x[1] for x in o), statistics.median(x[2] for x in o)
    print(f"| {m} | {b} | {t} | {mo:.1f} | {mp:.1f} | {mo/mp:.2f} | {mg:.1f} | {mf:.2f} | {len(o)} |")
PY
