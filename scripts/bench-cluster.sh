#!/usr/bin/env bash
# Benchmark (not a test) of a 4-node cluster, 2 nodes per AZ, on this
# machine, all on loopback:
#   1. acked readings/s and ack latency through one node with
#      ack = "replicated", then with ack = "local" (a fresh cluster each);
#   2. failover: a steady load through a1 while b1 is killed with SIGKILL;
#      the load's "longest ack gap" is how long the cluster stopped
#      acknowledging until b1's devices were served again.
#
# Usage: scripts/bench-cluster.sh [VATIO_BIN]
#   VATIO_BIN defaults to target/demo/vatio
#   (build it with `cargo build --profile demo -p vatio-cluster`).
# Settings (environment): DEVICES=1000 BATCH=500 DURATION=20s
#   FAILOVER_RATE=20000 FAILOVER_KILL_AT=10 FAILOVER_DURATION=30s
#   FSYNC=always PORT_BASE=27400 KEEP=1 (keep the nodes' files)
#   NODE_LOG=warn (the nodes' VATIO_LOG)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target/demo/vatio}
DEVICES=${DEVICES:-1000}
BATCH=${BATCH:-500}
DURATION=${DURATION:-20s}
FAILOVER_RATE=${FAILOVER_RATE:-20000}
FAILOVER_KILL_AT=${FAILOVER_KILL_AT:-10}
FAILOVER_DURATION=${FAILOVER_DURATION:-30s}
FSYNC=${FSYNC:-always}
PORT_BASE=${PORT_BASE:-27400}
NODES=(a1:az-a a2:az-a b1:az-b b2:az-b)

[ -x "$BIN" ] || { echo "no vatio binary at $BIN (cargo build --profile demo -p vatio-cluster)" >&2; exit 2; }
ROOT=$(mktemp -d /tmp/vatio-bench.XXXXXX)
declare -A PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $ROOT" >&2; else rm -rf "$ROOT"; fi
}
trap cleanup EXIT

grpc_port() { echo $((PORT_BASE + 2 * $1)); }
gossip_port() { echo $((PORT_BASE + 2 * $1 + 1)); }

# write_configs DIR ACK: one config per node under DIR/ID/node.toml.
write_configs() {
  local dir=$1 ack=$2 i j
  for i in "${!NODES[@]}"; do
    local id=${NODES[$i]%%:*} az=${NODES[$i]##*:} seeds=()
    for j in "${!NODES[@]}"; do
      [ "$i" = "$j" ] || seeds+=("\"127.0.0.1:$(gossip_port "$j")\"")
    done
    mkdir -p "$dir/$id"
    cat >"$dir/$id/node.toml" <<EOF
[node]
id = "$id"
az = "$az"
data_dir = "$dir/$id/data"
listen = "127.0.0.1:$(grpc_port "$i")"

[cluster]
gossip_listen = "127.0.0.1:$(gossip_port "$i")"
seeds = [$(IFS=,; echo "${seeds[*]}")]
ack = "$ack"

[log]
fsync = "$FSYNC"
EOF
  done
}

start_node() {
  local dir=$1 id=$2
  VATIO_LOG=${NODE_LOG:-warn} "$BIN" node --config "$dir/$id/node.toml" >"$dir/$id.out" 2>"$dir/$id.err" &
  PIDS[$id]=$!
}

# Ready, verified members node $1 (index) lists.
ready_members() {
  "$BIN" status --addr "http://127.0.0.1:$(grpc_port "$1")" --json 2>/dev/null | python3 -c '
import json, sys
status = json.load(sys.stdin)
print(sum(1 for k, v in status.items()
          if k.startswith("member_") and v.endswith(" ready")))' 2>/dev/null || echo 0
}

# How far node $1 (index)'s replication is behind its log, in bytes.
replication_lag() {
  "$BIN" status --addr "http://127.0.0.1:$(grpc_port "$1")" --json 2>/dev/null | python3 -c '
import json, sys
print(json.load(sys.stdin).get("lag_bytes_replication", 0))' 2>/dev/null || echo 0
}

# start_cluster DIR ACK: starts all nodes and waits (at most 120 s) until
# every node lists all of them as ready and verified.
start_cluster() {
  local dir=$1 ack=$2 i id
  write_configs "$dir" "$ack"
  for i in "${!NODES[@]}"; do start_node "$dir" "${NODES[$i]%%:*}"; done
  for i in "${!NODES[@]}"; do
    for _ in $(seq 1 1200); do
      [ "$(ready_members "$i")" = "${#NODES[@]}" ] && continue 2
      sleep 0.1
    done
    echo "node ${NODES[$i]} did not see the whole cluster ready; logs in $dir" >&2
    KEEP=1
    exit 1
  done
}

stop_cluster() {
  local id
  for id in "${!PIDS[@]}"; do kill -TERM "${PIDS[$id]}" 2>/dev/null || true; done
  for id in "${!PIDS[@]}"; do wait "${PIDS[$id]}" 2>/dev/null || true; done
  PIDS=()
}

# The fields of a `vatio load --json` report worth a table row.
summarize() {
  python3 -c '
import json, sys
r = json.load(sys.stdin)
fields = ("acked_readings_per_s", "ack_latency_p50_ms", "ack_latency_p99_ms",
          "ack_latency_max_ms", "longest_ack_gap_ms", "batches_acked",
          "batches_acked_replicated", "errors")
print("{:<22} {:>12,.0f} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f} {:>8} {:>8} {:>6}".format(
    sys.argv[1], *(r[f] for f in fields)))' "$1"
}

echo "vatio cluster benchmark: $BIN, 4 nodes (2 per AZ), fsync=$FSYNC, $(nproc) cores"
printf '%-22s %12s %9s %9s %9s %9s %8s %8s %6s\n' run "acked/s" "p50 ms" "p99 ms" "max ms" "gap ms" batches repl errors

for ack in replicated local; do
  dir="$ROOT/throughput-$ack"
  start_cluster "$dir" "$ack"
  "$BIN" load --addr "http://127.0.0.1:$(grpc_port 0)" --devices "$DEVICES" --batch "$BATCH" \
    --duration "$DURATION" --json >"$dir/load.json" 2>"$dir/load.err"
  summarize "ack=$ack" <"$dir/load.json"
  # Under ack = local nothing waits for replication: whatever it has not
  # caught up with when the load stops is work the run did not pay for.
  lag=0
  for i in "${!NODES[@]}"; do lag=$((lag + $(replication_lag "$i"))); done
  echo "  replication behind its logs when the load stopped: $(python3 -c "print(f'{$lag / 1e6:.1f}')") MB over the ${#NODES[@]} nodes"
  stop_cluster
done

dir="$ROOT/failover"
start_cluster "$dir" replicated
"$BIN" load --addr "http://127.0.0.1:$(grpc_port 0)" --devices "$DEVICES" --batch 100 \
  --rate "$FAILOVER_RATE" --duration "$FAILOVER_DURATION" --json \
  >"$dir/load.json" 2>"$dir/load.err" &
load_pid=$!
sleep "$FAILOVER_KILL_AT"
kill -9 "${PIDS[b1]}"
echo "b1 killed at $(date -u +%H:%M:%S.%N)" >"$dir/killed"
wait "${PIDS[b1]}" 2>/dev/null || true
unset 'PIDS[b1]'
wait "$load_pid"
summarize "kill -9 b1 at ${FAILOVER_KILL_AT}s" <"$dir/load.json"
stop_cluster
