# Helpers shared by deploy/test-compose.sh and deploy/test-netns.sh, which
# run a real cluster under faults across a network. Sourced, not run.
#
# The caller defines gc_at HOST ARGS... (runs the gencluster CLI on host
# HOST: a compose service, a network namespace) and sets:
#   tag     prefix of every line printed
#   hosts   the coordinators' host names (the gRPC port is 7000)
#   via     the hosts to run the CLI on (gc tries them in order)
#   coords  the coordinators the CLI asks (comma-separated host:port)
#   markers a file that collects the ids of the marker jobs

# gc ARGS...: runs the CLI on the first host in $via where it succeeds.
gc() {
  local h
  for h in $via; do
    if gc_at "$h" "$@" 2>/dev/null; then return 0; fi
  done
  return 1
}

# field EXPR: evaluates EXPR (python; s = the status JSON) on the cluster's status.
field() {
  gc status --coordinator "$coords" --json | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"
}

# field_at HOST EXPR: the same on the view of the coordinator on HOST
# alone, asked on HOST itself (over loopback: a host cut off the network
# may not even resolve its own name).
field_at() {
  gc_at "$1" status --coordinator 127.0.0.1:7000 --json 2>/dev/null | python3 -c "import json,sys; s=json.load(sys.stdin); print($2)"
}

# wait_for SECONDS WHAT EXPR: polls until EXPR (python on s) is true.
wait_for() {
  local deadline=$((SECONDS + $1))
  until [ "$(field "$3" 2>/dev/null || echo False)" = True ]; do
    if [ $SECONDS -ge $deadline ]; then fail "timed out waiting for $2"; fi
    sleep 0.5
  done
}

fail() { echo "$tag: $*" >&2; exit 1; }
now() { python3 -c 'import time; print(time.time())'; }
step() { field "(s['job'] or {}).get('step', 0)"; }

# recover T0 NAME: waits until the job is 20 steps past where it is now and
# prints the time since T0 (when the fault began).
recover() {
  local t0=$1 name=$2 from
  from=$(step 2>/dev/null || echo 0)
  wait_for 180 "the job to go on after $name" "(s['job'] or {}).get('step', 0) >= $from + 20"
  printf '%s: %-24s recovered in %.1f s\n' "$tag" "$name" "$(python3 -c "import time; print(time.time() - $t0)")"
}

# rejoined ADDR NAME: waits until the worker advertising ADDR is in the
# ring again and prints how long that took.
rejoined() {
  local t0
  t0=$(now)
  wait_for 120 "$2 back in the ring" "any(w['addr'] == '$1' and w['rank'] >= 0 for w in s['workers'])"
  printf '%s: %-24s back in the ring in %.1f s\n' "$tag" "$2" "$(python3 -c "import time; print(time.time() - $t0)")"
}

# marker: a committed write made through the majority: submits a job and
# cancels it (it never runs), and records its id. check_writes later
# demands every marker on every coordinator.
marker() {
  local id
  id=$(gc submit --coordinator "$coords" --model vae --steps 1 --timeout 30s | tr -d '\r') || fail "marker: no coordinator took a submit"
  gc cancel --coordinator "$coords" --reason marker "$id" >/dev/null || fail "marker: cancelling $id failed"
  echo "$id" >>"$markers"
}

# minority_refuses HOST: HOST is cut off from the others. Its own view
# must say it may be stale, and a write sent to it must fail: a minority
# commits nothing. (check_writes proves afterwards that nothing it was
# given appeared.)
minority_refuses() {
  local h=$1 deadline=$((SECONDS + 30)) out
  until [ -n "$(field_at "$h" "s.get('stale_reason', '')" 2>/dev/null)" ]; do
    if [ $SECONDS -ge $deadline ]; then fail "cut-off $h never said its view may be stale"; fi
    sleep 0.5
  done
  if out=$(gc_at "$h" submit --coordinator 127.0.0.1:7000 --model vae --steps 1 --timeout 8s 2>&1); then
    fail "cut-off coordinator $h took a write (job $out): a minority committed"
  fi
  echo "$tag: cut-off $h refused a write: $(echo "$out" | tail -1 | cut -c1-160)"
}

# check_writes MAIN_JOB: every coordinator, asked alone, holds exactly the
# main job and every marker (cancelled), and no other job: no committed
# write was lost and none the minority was given appeared.
check_writes() {
  local main=$1 h want got deadline
  want=$( (echo "$main"; cat "$markers") | sort | tr '\n' ' ')
  for h in $hosts; do
    deadline=$((SECONDS + 60))
    until got=$(field_at "$h" "' '.join(sorted(q['id'] for q in s['queue'])) + ' '") && [ "$got" = "$want" ]; do
      if [ $SECONDS -ge $deadline ]; then fail "coordinator $h holds jobs [$got], want [$want]"; fi
      sleep 1
    done
  done
  echo "$tag: every coordinator holds the job and all $(wc -l <"$markers") acknowledged marker writes, and nothing else"
}

# check_end JOB STEPS LOGS...: the job ended done at STEPS, and the
# workers' logs carry one parameter checksum on their "job
# complete" lines (LOGS... is a command that prints them, run after the
# job ended).
check_end() {
  local job=$1 steps=$2 state sums n
  shift 2
  wait_for 900 "the job to end" "any(q['id'] == '$job' and q['state'] in ('done', 'failed', 'cancelled') for q in s['queue'])"
  state=$(field "[q['state'] + ' ' + str(q['step']) for q in s['queue'] if q['id'] == '$job'][0]")
  echo "$tag: job $job ended $state"
  [ "$state" = "done $steps" ] || fail "the job ended $state, want done $steps"
  sums=$("$@" | grep 'msg="job complete"' | grep "job=$job step=$steps" | sed -E 's/.*params_checksum=([0-9a-f]+).*/\1/' | sort -u)
  n=$(echo "$sums" | grep -c . || true)
  echo "$tag: final parameter checksums: $(echo $sums)"
  [ "$n" = 1 ] || fail "the surviving workers' final parameters differ ($n checksums)"
}
