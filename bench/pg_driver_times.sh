#!/usr/bin/env bash
# Times promote, rewind and a ~100 MB clone with pg-driver on real PostgreSQL servers
# (temp dirs, loopback ports, cleaned up afterwards). Usage: bench/pg_driver_times.sh [MB]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -p pg-driver --features testing --example pg_driver_times -- "${1:-100}"
