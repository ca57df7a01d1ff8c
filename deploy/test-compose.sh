#!/usr/bin/env bash
# Runs the compose cluster (deploy/compose.yaml: 3 coordinators, 3 workers,
# every connection mutual TLS) under faults across its network, for real: it builds the image, brings
# the cluster up, submits a job and, while it trains, kills a worker, kills
# the raft leader, cuts the new leader off the network (a partition: the
# cut-off minority must refuse writes; it rejoins after reconnect),
# restarts a worker (it comes back on a new IP) and pauses one (a stalled
# process: the others must go on while it is paused). After each fault it
# makes a committed write through the majority (a marker job, submitted
# and cancelled). It prints each fault's recovery time (fault to 20 steps
# past where the coordinators then stood), checks that the job ends done
# at its step count with every surviving worker's parameters equal, that
# every coordinator holds every acknowledged write and nothing the
# minority was given, and tears everything down, also when it fails.
# Skips (exit 0, one line) where no Docker engine answers.
#
#   deploy/test-compose.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
  echo "test-compose: SKIP: no Docker engine answers (docker info failed)"
  exit 0
fi
steps=${1:-6000}
project=gctest$$
logs=$(mktemp -d)
tag=test-compose
markers=$logs/markers
: >"$markers"
dc() { docker-compose -f deploy/compose.yaml -p "$project" "$@"; }
cleanup() {
  status=$?
  dc logs --no-color >"$logs/compose.log" 2>&1 || true
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  if [ $status -ne 0 ]; then
    echo "test-compose: FAILED; the cluster's log: $logs/compose.log" >&2
    tail -40 "$logs/compose.log" >&2 || true
  fi
}
trap cleanup EXIT

deploy/build-image.sh gencluster:dev
dc up -d >/dev/null 2>&1
. deploy/testlib.sh
# Commands run in the containers through the docker CLI by container id
# (docker-compose's own exec starts a Python program each time, seconds
# on a loaded machine, which the recovery times would include). Ids stay
# across docker start, restart and network (dis)connect.
declare -A ids
for s in c1 c2 c3 w1 w2 w3; do ids[$s]=$(dc ps -q "$s"); done
gc_at() { local h=$1; shift; docker exec "${ids[$h]}" gencluster --tls-dir /pki/client "$@"; }
hosts="c1 c2 c3"
via=$hosts
coords=c1:7000,c2:7000,c3:7000
cid() { echo "${ids[$1]}"; }

wait_for 60 "3 workers" "len(s['workers']) == 3"
job=$(gc submit --coordinator "$coords" --model vae --batch 64 --steps "$steps" --checkpoint-every 500 | tr -d '\r')
echo "$tag: job $job, $steps steps"
# Every connection is mutual TLS: without a certificate nothing answers,
# and a worker's certificate may not submit.
if docker exec "${ids[c1]}" gencluster status --coordinator c1:7000 --timeout 3s >/dev/null 2>&1; then
  echo "$tag: FAIL: a status call without a certificate was answered" >&2
  exit 1
fi
if out=$(docker exec "${ids[c1]}" gencluster --tls-dir /pki/worker submit --coordinator c1:7000 --model vae --steps 1 --timeout 5s 2>&1) ||
  ! grep -q PermissionDenied <<<"$out"; then
  echo "$tag: FAIL: a worker certificate submitting was not refused with PermissionDenied: $out" >&2
  exit 1
fi
echo "$tag: mutual TLS: no certificate, no answer; a worker certificate may not submit"
wait_for 120 "the job to pass step 200" "(s['job'] or {}).get('step', 0) >= 200"
marker

# A killed container stays down (a kill counts as stopped by hand for the
# restart policy) until it is started again, as an operator would.
t0=$(now); docker kill "$(cid w2)" >/dev/null; recover "$t0" "kill worker w2"
docker start "$(cid w2)" >/dev/null
wait_for 60 "w2 back" "len(s['workers']) == 3"
marker
leader=$(field "s['leader'].split(':')[0]")
t0=$(now); docker kill "$(cid "$leader")" >/dev/null; recover "$t0" "kill leader $leader"
docker start "$(cid "$leader")" >/dev/null
wait_for 60 "$leader back" "all(c['state'] in ('leader', 'follower') for c in s['coordinators'])"
marker

# Cut the leader off: the other two elect a new one and go on; the cut-off
# one must commit nothing. While it is cut off, ask the others only (it
# answers with its own, frozen view).
leader=$(field "s['leader'].split(':')[0]")
net="${project}_gencluster"
via=$(echo $hosts | tr ' ' '\n' | grep -vx "$leader" | tr '\n' ' ')
coords=$(for h in $via; do printf '%s:7000,' "$h"; done)
coords=${coords%,}
t0=$(now); docker network disconnect "$net" "$(cid "$leader")"; recover "$t0" "partition leader $leader"
marker
minority_refuses "$leader"
docker network connect --alias "$leader" "$net" "$(cid "$leader")"
via=$hosts
coords=c1:7000,c2:7000,c3:7000
wait_for 60 "$leader back as a follower" "any(c['id'] == '$leader' and c['state'] == 'follower' for c in s['coordinators'])"
t0=$(now); docker restart "$(cid w3)" >/dev/null; recover "$t0" "restart worker w3"
marker
# A stalled process: the others must go on while it is paused (at least
# 8 s), and it comes back when it is unpaused.
t0=$(now); docker pause "$(cid w1)" >/dev/null; recover "$t0" "pause worker w1"
sleep "$(python3 -c "print(max(0, 8 - ($(now) - $t0)))")"
docker unpause "$(cid w1)" >/dev/null
rejoined w1:7100 "w1 after unpause"
marker

check_end "$job" "$steps" dc logs --no-color w1 w2 w3
check_writes "$job"
echo "$tag: PASS"
