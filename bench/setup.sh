#!/bin/bash
# Installs what the benchmarks in bench/ need; idempotent (safe to run again, skips what is there).
#   apt: nghttp2-client (h2load), time (GNU time), bc, curl, util-linux (taskset)
#   venv bench/.venv: opentelemetry-proto + protobuf + numpy (frame generator), grpcio (distinct-frame sender),
#   duckdb (reference engine for the aggregate query)
# Usage: bash bench/setup.sh
set -euo pipefail
B=$(cd "$(dirname "$0")" && pwd)

need=()
command -v h2load >/dev/null || need+=(nghttp2-client)
[ -x /usr/bin/time ] || need+=(time)
command -v bc >/dev/null || need+=(bc)
command -v curl >/dev/null || need+=(curl)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "apt: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Pinned versions (checked with `pip index versions NAME`).
PKGS=(opentelemetry-proto==1.45.2 protobuf==7.36.2 numpy==2.4.6 grpcio==1.85.3 duckdb==2.0.1)
[ -x "$B/.venv/bin/python" ] || python3 -m venv "$B/.venv"
if ! "$B/.venv/bin/python" -c 'import duckdb, grpc, numpy, google.protobuf; from opentelemetry.proto.collector.trace.v1 import trace_service_pb2' 2>/dev/null \
   || ! "$B/.venv/bin/pip" freeze 2>/dev/null | grep -qx 'grpcio==1.85.3'; then
  timeout 900 "$B/.venv/bin/pip" install -q "${PKGS[@]}"
fi
"$B/.venv/bin/python" -c 'import duckdb, google.protobuf as p; print("venv ok: duckdb", duckdb.__version__, "protobuf", p.__version__)'
h2load --version | head -1
echo "bench setup done"
