#!/usr/bin/env bash
# Side-by-side compute benchmark: gencluster bench compute vs PyTorch
# (scripts/torch_reference.py compute, Debian's python3-torch) at the same
# model, batch and threads, alternating runs so that both see the same
# machine state.
# Usage: scripts/bench_compute.sh [ROUNDS]   (default 3; prints a Markdown table)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=$(mktemp -d)/gencluster
go build -o "$bin" ./cmd/gencluster
export MNIST_DIR=$PWD/dataset/mnistdata
declare -A steps=([pixelcnn]=20 [vae]=200)
declare -A batch=([pixelcnn]=32 [vae]=128)
results=$(mktemp)
for r in $(seq "$rounds"); do
  for model in pixelcnn vae; do
    for t in 1 2; do
      b=${batch[$model]} s=${steps[$model]}
      ours=$("$bin" bench compute --model "$model" --batch "$b" --threads "$t" --steps "$s" --json |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["images_per_sec"])')
      torch=$(/usr/bin/python3 scripts/torch_reference.py compute "$model" "$b" "$s" "$t" |
        sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p')
      echo "$model $b $t $ours $torch" >>"$results"
    done
  done
done
/usr/bin/python3 - "$results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(lambda: ([], []))
for line in open(sys.argv[1]):
    m, b, t, o, p = line.split()
    rows[(m, int(b), int(t))][0].append(float(o)); rows[(m, int(b), int(t))][1].append(float(p))
print("| model | batch | threads | gencluster img/s (median) | PyTorch img/s (median) | ratio | runs |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for (m, b, t), (o, p) in sorted(rows.items()):
    mo, mp = statistics.median(o), statistics.median(p)
    print(f"| {m} | {b} | {t} | {mo:.1f} | {mp:.1f} | {mo/mp:.2f} | {len(o)} |")
PY
