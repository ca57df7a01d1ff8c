#!/usr/bin/env bash
# Builds the container image (default tag gencluster:dev) FROM scratch: the
# gencluster binary built static (CGO_ENABLED=0, the built-in MNIST
# inside), run as user 65532, entrypoint gencluster. Nothing is pulled.
#
#   deploy/build-image.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-gencluster:dev}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
vcs=false # stamp the revision (gencluster version) when git can tell it
if git rev-parse HEAD >/dev/null 2>&1; then vcs=true; fi
CGO_ENABLED=0 GOOS=linux go build -buildvcs=$vcs -trimpath -ldflags='-s -w' -o "$ctx/gencluster" ./cmd/gencluster
mkdir "$ctx/data" "$ctx/tmp" "$ctx/pki"
cp deploy/Dockerfile "$ctx/Dockerfile"
if ! docker build -t "$tag" "$ctx" >"$ctx/build.log" 2>&1; then
  cat "$ctx/build.log" >&2
  exit 1
fi
size=$(docker image inspect --format '{{.Size}}' "$tag")
echo "built $tag: $((size / 1024 / 1024)) MiB ($size bytes)"
