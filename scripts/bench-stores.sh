#!/usr/bin/env bash
# Throughput of vatio's production sinks into real servers on this machine,
# against the same servers driven directly (curl for InfluxDB 1.6, pymongo
# for SecantusDB), and Parquet rows/s to moto. A benchmark, not a test:
# numbers depend on the machine. Arguments: [POINTS] [DOCS] [ROWS].
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/servers/install.sh >/dev/null
python3 -c 'import pymongo' 2>/dev/null || python3 -m pip install --quiet pymongo
# The demo profile: optimised, and already built by the README's first command.
exec cargo run -q --profile demo -p vatio-stores --example sink_throughput -- "$@"
