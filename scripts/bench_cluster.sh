#!/usr/bin/env bash
# Side-by-side cluster benchmark: in each round, gencluster bench cluster
# (train --threads 2 vs local --workers 2 --threads 1, the embedded cluster),
# then PyTorch (scripts/torch_reference.py, Debian's python3-torch): one
# process of 2 threads (compute) vs DistributedDataParallel over gloo, 2
# processes of 1 thread (ddp), same model and global batch.
# Usage: scripts/bench_cluster.sh [ROUNDS]   (default 3; prints a Markdown table
# of medians and rank 0's step split)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=$(mktemp -d)/gencluster
go build -o "$bin" ./cmd/gencluster
export MNIST_DIR=$PWD/dataset/mnistdata
declare -A steps=([pixelcnn]=40 [vae]=400)
declare -A batch=([pixelcnn]=32 [vae]=128)
results=$(mktemp)
for r in $(seq "$rounds"); do
  for model in pixelcnn vae; do
    b=${batch[$model]} s=${steps[$model]}
    ours=$("$bin" bench cluster --model "$model" --batch "$b" --steps "$s" --rounds 1 --parts throughput --json 2>/dev/null |
      /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["train_images_per_sec"], r["local_images_per_sec"], r["compute_ms_per_step"], r["allreduce_ms_per_step"], r["exposed_ms_per_step"], r["optimizer_ms_per_step"], r["step_ms_per_step"])')
    one=$(/usr/bin/python3 scripts/torch_reference.py compute "$model" "$b" "$s" 2 | sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p')
    ddp=$(/usr/bin/python3 scripts/torch_reference.py ddp "$model" "$b" "$s" 2 2>/dev/null | sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p')
    echo "$model $b $ours $one $ddp" >>"$results"
  done
done
/usr/bin/python3 - "$results" <<'PY'
import sys, statistics as st, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    rows[(f[0], int(f[1]))].append([float(v) for v in f[2:]])
print("| model | batch | gencluster train 2T img/s | local 2x1T img/s | local/train | PyTorch 1 process 2T img/s | DDP 2x1T img/s | DDP/1 process | local/DDP | rank 0 step: compute, all-reduce, exposed, optimizer, whole (ms) | rounds |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for (m, b), rs in sorted(rows.items()):
    med = lambda i: st.median(r[i] for r in rs)
    ratio = lambda i, j: st.median(r[i] / r[j] for r in rs)
    print(f"| {m} | {b} | {med(0):.1f} | {med(1):.1f} | {ratio(1, 0):.3f} | {med(7):.1f} | {med(8):.1f} | {ratio(8, 7):.3f} | {ratio(1, 8):.2f} | "
          f"{med(2):.2f}, {med(3):.2f}, {med(4):.2f}, {med(5):.2f}, {med(6):.2f} | {len(rs)} |")
PY
