#!/usr/bin/env bash
# A/B of agent binaries (e.g. two builds of a change): each runs `arkouda-push-agent run`
# against a fresh Pushgateway and simulator, one after the other, ROUNDS times in
# alternation, so that a load that changes during the run touches every binary alike.
# Prints, per run, the agent's CPU per cycle (every thread, from schedstat, over CYCLES
# cycles after 3 warm-up cycles) and its RSS at the end. A binary may be a wrapper script
# that sets an environment and execs the agent.
#
#   bash benches/ab.sh BIN_A BIN_B [BIN...]
#   SIZES="1024 4096" CYCLES=20 ROUNDS=2 bash benches/ab.sh old/arkouda-push-agent new/arkouda-push-agent
set -euo pipefail
cd "$(dirname "$0")/.."
(( $# >= 1 )) || { echo "usage: $0 BIN [BIN...]" >&2; exit 2; }
CYCLES=${CYCLES:-20}
ROUNDS=${ROUNDS:-2}
SIZES=${SIZES:-"1 1024 4096"}
INTERVAL_MS=${INTERVAL_MS:-250}
cargo build --release --quiet --bin arkouda-sim
. benches/tools/common.sh
cycles() { grep -c "cycle done" "$W/agent.log" 2>/dev/null || true; }

echo "| locales | round | binary | agent CPU ms/cycle | agent RSS MiB |"
echo "|---:|---:|---|---:|---:|"
for L in $SIZES; do
  for round in $(seq 1 "$ROUNDS"); do
    for bin in "$@"; do
      pg_port=$(free_port); sim_port=$(free_port)
      /usr/bin/prometheus-pushgateway --web.listen-address=127.0.0.1:$pg_port --persistence.file= >/dev/null 2>&1 &
      pg=$!; pids+=($pg)
      "$R"/arkouda-sim --metrics-port "$sim_port" --locales "$L" >/dev/null 2>&1 &
      sim=$!; pids+=($sim)
      until ready "http://127.0.0.1:$pg_port/-/ready"; do sleep 0.05; done
      : >"$W/agent.log"
      ARKOUDA_PUSH_AGENT_CONFIG=/dev/null "$bin" run --arkouda "tcp://127.0.0.1:$sim_port" \
        --pushgateway "http://127.0.0.1:$pg_port" --job-id ab --interval "${INTERVAL_MS}ms" \
        --arkouda-timeout 10s --lock-dir "$W" --log-level arkouda_push_agent=debug 2>"$W/agent.log" &
      a=$!; pids+=($a)
      until (( $(cycles) >= 3 )); do sleep 0.01; done
      c0=$(cpu_ms $a)
      until (( $(cycles) >= CYCLES + 3 )); do sleep 0.01; done
      c1=$(cpu_ms $a); rss=$(awk '/VmRSS/{print $2}' "/proc/$a/status")
      for p in $a $sim $pg; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
      python3 -c "print(f'| $L | $round | $bin | {($c1-$c0)/$CYCLES:.2f} | {$rss/1024:.1f} |')"
    done
  done
done
