#!/usr/bin/env bash
# Runs the cluster as separate processes on separate hosts without Docker:
# seven network namespaces (coordinators c1-c3, workers w1-w3 and an
# operator's host op), each with one address on a veth pair whose other
# end is on a bridge in an eighth namespace (the switch), and each with
# its own /etc/hosts naming the others (ip netns exec mounts
# /etc/netns/NS/hosts), so every peer is named by host name and nothing
# goes over loopback or the machine's own network. Each process has its
# own data dir and talks to the others only over its link. Every
# connection is TLS: coordinators hold certificates, workers and the
# operator only the join token (gencluster certs init).
#
# While a VAE job trains it cuts the raft leader's link (ip link set down
# on the switch's end; the cut-off minority must refuse writes) and later
# a worker's, for 10 s each, and brings them back. After each fault it
# makes a committed write through the majority (a marker job, submitted
# and cancelled). It prints each fault's recovery time and checks that the
# job ends done at its step count with the workers' parameters equal and
# that every coordinator holds every acknowledged write and nothing else.
# It removes the namespaces and processes, also when it fails. Skips (exit
# 0, one line) without root or iproute2.
#
#   deploy/test-netns.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
tag=test-netns
run=gcn$$
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! ip netns add "$run-probe" 2>/dev/null; then
  echo "$tag: SKIP: needs root and iproute2 to make network namespaces (ip netns add failed)"
  exit 0
fi
ip netns del "$run-probe"
steps=${1:-3000}
work=$(mktemp -d)
markers=$work/markers
: >"$markers"
sw=$run-sw
names="c1 c2 c3 w1 w2 w3 op"
declare -A ip4=([c1]=10.77.0.1 [c2]=10.77.0.2 [c3]=10.77.0.3 [w1]=10.77.0.11 [w2]=10.77.0.12 [w3]=10.77.0.13 [op]=10.77.0.20)

cleanup() {
  local status=$? h
  for h in $names; do
    ip netns pids "$run-$h" 2>/dev/null | xargs -r kill -TERM 2>/dev/null || true
  done
  for _ in $(seq 30); do # up to 15 s to stop cleanly
    [ -z "$(for h in $names; do ip netns pids "$run-$h" 2>/dev/null; done)" ] && break
    sleep 0.5
  done
  for h in $names; do
    ip netns pids "$run-$h" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns del "$run-$h" 2>/dev/null || true
    rm -rf "/etc/netns/$run-$h"
  done
  ip netns del "$sw" 2>/dev/null || true
  if [ $status -ne 0 ]; then
    echo "$tag: FAILED; the processes' logs are in $work" >&2
    tail -20 "$work"/*.log >&2 || true
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

CGO_ENABLED=0 go build -o "$work/gencluster" ./cmd/gencluster
bin=$work/gencluster
# Credentials: coordinators hold certificates and admit the join token;
# workers and the operator hold only the token.
pki=$work/pki
"$bin" certs init --dir "$pki" --coordinator-hosts c1,c2,c3 >/dev/null
coordauth=(--tls-dir "$pki/coordinator" --token-file "$pki/token")
tokenauth=(--token-file "$pki/token")

# The network: a bridge in the switch namespace, a veth pair per host.
ip netns add "$sw"
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
hostsfile=$work/hosts
{
  echo "127.0.0.1 localhost"
  for h in $names; do echo "${ip4[$h]} $h"; done
} >"$hostsfile"
for h in $names; do
  ns=$run-$h
  ip netns add "$ns"
  mkdir -p "/etc/netns/$ns"
  cp "$hostsfile" "/etc/netns/$ns/hosts"
  echo "nameserver 127.0.0.1" >"/etc/netns/$ns/resolv.conf" # no DNS: names come from hosts
  ip -n "$sw" link add "v-$h" type veth peer name eth0 netns "$ns"
  ip -n "$sw" link set "v-$h" master br0 up
  ip -n "$ns" addr add "${ip4[$h]}/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done

start() { # start HOST ARGS...: runs gencluster on HOST in the background
  local h=$1
  shift
  ip netns exec "$run-$h" "$bin" "$@" >>"$work/$h.log" 2>&1 &
  disown # cleanup stops it; no job-control chatter when it does
}
peers=c1=c1:7000,c2=c2:7000,c3=c3:7000
for h in c1 c2 c3; do
  start "$h" "${coordauth[@]}" coordinator --id "$h" --listen 0.0.0.0:7000 --advertise "$h:7000" --peers "$peers" \
    --data-dir "$work/$h" --http 0.0.0.0:8080
done
for h in w1 w2 w3; do
  start "$h" "${tokenauth[@]}" worker --join c1:7000,c2:7000,c3:7000 --listen 0.0.0.0:7100 --advertise "$h:7100" \
    --data-dir "$work/$h" --threads 1 --http 0.0.0.0:8080
done

. deploy/testlib.sh
gc_at() { local h=$1; shift; ip netns exec "$run-$h" "$bin" "${tokenauth[@]}" "$@"; }
cut_link() { ip -n "$sw" link set "v-$1" down; }
mend_link() { ip -n "$sw" link set "v-$1" up; }
hosts="c1 c2 c3"
via=op
coords=c1:7000,c2:7000,c3:7000

# Every process ready, asked from the operator's host over the network.
deadline=$((SECONDS + 60))
for h in c1 c2 c3 w1 w2 w3; do
  until gc_at op probe --http "$h:8080" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "$h is not ready: $(gc_at op probe --http "$h:8080" 2>&1)"
    sleep 0.5
  done
done
echo "$tag: 3 coordinators and 3 workers ready on their own hosts"
wait_for 30 "3 workers" "len(s['workers']) == 3 and all(w['addr'].split(':')[0] in ('w1', 'w2', 'w3') for w in s['workers'])"
job=$(gc submit --coordinator "$coords" --model vae --batch 64 --steps "$steps" --checkpoint-every 500)
echo "$tag: job $job, $steps steps"
if ip netns exec "$run-op" "$bin" status --coordinator c1:7000 --timeout 3s >/dev/null 2>&1; then
  fail "a status call without the token was answered"
fi
echo "$tag: TLS with the join token: workers and the operator hold only the token; without it, no answer"
wait_for 120 "the job to pass step 200" "(s['job'] or {}).get('step', 0) >= 200"
marker

leader=$(field "s['leader'].split(':')[0]")
t0=$(now)
cut_link "$leader"
recover "$t0" "cut leader $leader"
minority_refuses "$leader"
marker
mend_link "$leader"
wait_for 60 "$leader back as a follower" "any(c['id'] == '$leader' and c['state'] == 'follower' for c in s['coordinators'])"

t0=$(now)
cut_link w2
recover "$t0" "cut worker w2"
sleep 10
mend_link w2
rejoined w2:7100 "w2 after its link is up"
marker

check_end "$job" "$steps" cat "$work/w1.log" "$work/w2.log" "$work/w3.log"
check_writes "$job"
echo "$tag: PASS"
