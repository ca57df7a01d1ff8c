#!/usr/bin/env bash
# Runs the compose cluster (deploy/compose.yaml: 3 coordinators, 3 workers)
# under faults across its network, for real: it builds the image, brings
# the cluster up, submits a job and, while it trains, kills a worker, kills
# the raft leader, cuts a coordinator off the network (and reconnects it),
# restarts a worker (it comes back on a new IP) and pauses one (a stalled
# process). It prints each fault's recovery time (fault to the next step
# the coordinators record), checks that the job ends done at its step
# count with every surviving worker's parameters equal, and tears
# everything down, also when it fails. Skips (exit 0, one line) where no
# Docker engine answers.
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
# gc runs gencluster in the first of the coordinators' containers in $via
# that answers, asking the coordinators in $coords.
via="c1 c2 c3"
coords=c1:7000,c2:7000,c3:7000
gc() {
  local c
  for c in $via; do
    if dc exec -T "$c" gencluster "$@" 2>/dev/null; then return 0; fi
  done
  return 1
}
field() { # field EXPR: evaluates EXPR on the status JSON (python; s = status)
  gc status --coordinator "$coords" --json | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"
}
wait_for() { # wait_for SECONDS WHAT EXPR: polls until EXPR (python on s) is true
  local deadline=$((SECONDS + $1))
  until [ "$(field "$3" 2>/dev/null || echo False)" = True ]; do
    if [ $SECONDS -ge $deadline ]; then echo "test-compose: timed out waiting for $2" >&2; exit 1; fi
    sleep 0.5
  done
}
wait_for 60 "3 workers" "len(s['workers']) == 3"
job=$(gc submit --coordinator "$coords" --model vae --batch 64 --steps "$steps" --checkpoint-every 500 | tr -d '\r')
echo "test-compose: job $job, $steps steps"
wait_for 120 "the job to pass step 200" "(s['job'] or {}).get('step', 0) >= 200"

step() { field "(s['job'] or {}).get('step', 0)"; }
# recover NAME: waits until the job is 20 steps past where it was, and
# prints the time since the fault began.
recover() {
  local t0=$1 name=$2 from
  from=$(step 2>/dev/null || echo 0)
  wait_for 120 "the job to go on after $name" "(s['job'] or {}).get('step', 0) >= $from + 20"
  printf 'test-compose: %-22s recovered in %.1f s\n' "$name" "$(python3 -c "import time; print(time.time() - $t0)")"
}
now() { python3 -c 'import time; print(time.time())'; }
cid() { dc ps -q "$1"; }

# A killed container stays down (a kill counts as stopped by hand for the
# restart policy) until it is started again, as an operator would.
t0=$(now); docker kill "$(cid w2)" >/dev/null; recover "$t0" "kill worker w2"
docker start "$(cid w2)" >/dev/null
wait_for 60 "w2 back" "len(s['workers']) == 3"
leader=$(field "s['leader'].split(':')[0]")
t0=$(now); docker kill "$(cid "$leader")" >/dev/null; recover "$t0" "kill leader $leader"
docker start "$(cid "$leader")" >/dev/null
wait_for 60 "$leader back" "all(c['state'] in ('leader', 'follower') for c in s['coordinators'])"
follower=$(field "[c['id'] for c in s['coordinators'] if c['state'] != 'leader'][0]")
net="${project}_gencluster"
# While it is cut off, ask the others only: the cut-off one answers with
# its own, frozen view.
via=$(echo c1 c2 c3 | tr ' ' '\n' | grep -vx "$follower" | tr '\n' ' ')
coords=$(for c in $via; do printf '%s:7000,' "$c"; done)
coords=${coords%,}
t0=$(now); docker network disconnect "$net" "$(cid "$follower")"; recover "$t0" "partition $follower"
docker network connect --alias "$follower" "$net" "$(cid "$follower")"
via="c1 c2 c3"
coords=c1:7000,c2:7000,c3:7000
wait_for 60 "$follower back as a follower" "any(c['id'] == '$follower' and c['state'] == 'follower' for c in s['coordinators'])"
t0=$(now); docker restart "$(cid w3)" >/dev/null; recover "$t0" "restart worker w3"
t0=$(now); docker pause "$(cid w1)" >/dev/null; sleep 8; docker unpause "$(cid w1)" >/dev/null; recover "$t0" "pause worker w1 8 s"

wait_for 600 "the job to end" "(s['job'] or {}).get('state') in (None,) and any(q['id'] == '$job' and q['state'] in ('done', 'failed') for q in s['queue'])"
state=$(field "[q for q in s['queue'] if q['id'] == '$job'][0]['state'] + ' ' + str([q for q in s['queue'] if q['id'] == '$job'][0]['step'])")
echo "test-compose: job $job ended $state"
[ "$state" = "done $steps" ] || { echo "test-compose: the job ended $state, want done $steps" >&2; exit 1; }
sums=$(dc logs --no-color w1 w2 w3 2>/dev/null | grep 'msg="job complete"' | grep "job=$job step=$steps" | sed -E 's/.*params_checksum=([0-9a-f]+).*/\1/' | sort -u)
n=$(echo "$sums" | grep -c . || true)
echo "test-compose: final parameter checksums: $(echo $sums)"
[ "$n" = 1 ] || { echo "test-compose: the surviving workers' final parameters differ ($n checksums)" >&2; exit 1; }
echo "test-compose: PASS"
