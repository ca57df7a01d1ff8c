#!/usr/bin/env bash
# Regenerates the checked-in protobuf and gRPC code in api/genclusterpb from
# api/*.proto. Needs protoc (Debian's protobuf-compiler, 3.21) and the
# plugins at the pinned versions:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"
mkdir -p api/genclusterpb
protoc -I api \
  --go_out=. --go_opt=module=github.com/gencluster/gencluster \
  --go-grpc_out=. --go-grpc_opt=module=github.com/gencluster/gencluster \
  api/*.proto
