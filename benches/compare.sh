#!/usr/bin/env bash
# Whole-process figures, same machine, same run: the agent, the Python reference
# (prometheus_client + pyzmq, push_to_gateway) and the floor of a cycle (the agent's
# request frame on one ZeroMQ socket, the reply unread, then the agent's body pre-encoded
# and PUT over one keep-alive connection by a std-only client), each against a real
# Pushgateway and the
# simulator, for 1, 64, 1024 and 4096 locales. Then, once, the cost of the layout the agent
# does not use (one group per locale), and the agent's start-to-first-push time.
#
#   bash benches/compare.sh            # prints markdown tables for BENCHMARKS.md
#   CYCLES=40 SIZES="64 1024" bash benches/compare.sh
#   EXTRAS=0 bash benches/compare.sh   # the side-by-side table only (no layout, no start-up)
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${CYCLES:-40}
SIZES=${SIZES:-"1 64 1024 4096"}
INTERVAL_MS=${INTERVAL_MS:-250}
EXTRAS=${EXTRAS:-1}
python3 -c 'import zmq, prometheus_client' 2>/dev/null || pip install -q pyzmq prometheus_client
cargo build --release --quiet --bins --example put_floor --example poll_floor
. benches/tools/common.sh

start_pg() {
  PG_PORT=$(free_port)
  /usr/bin/prometheus-pushgateway --web.listen-address=127.0.0.1:$PG_PORT --persistence.file= >/dev/null 2>&1 &
  PG_PID=$!; pids+=($PG_PID)
  until ready "http://127.0.0.1:$PG_PORT/-/ready"; do sleep 0.05; done
}
start_sim() {
  SIM_PORT=$(free_port)
  "$R"/arkouda-sim --metrics-port "$SIM_PORT" --locales "$1" >/dev/null 2>&1 &
  SIM_PID=$!; pids+=($SIM_PID); sleep 0.3
}

echo "| locales | agent cycle ms (poll / render / push) | agent CPU ms/cycle | agent RSS MiB | Python cycle ms (poll / push) | Python CPU ms/cycle | Python RSS MiB | floor ms (poll + PUT) | CPU Python/agent | RSS Python/agent | agent push / floor PUT | agent cycle / floor |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for L in $SIZES; do
  # The agent.
  start_pg; start_sim "$L"
  ARKOUDA_PUSH_AGENT_CONFIG=/dev/null "$R"/arkouda-push-agent run --arkouda "tcp://127.0.0.1:$SIM_PORT" \
    --pushgateway "http://127.0.0.1:$PG_PORT" --job-id bench --interval "${INTERVAL_MS}ms" --arkouda-timeout 10s \
    --lock-dir "$W" --log-level arkouda_push_agent=debug 2>"$W/agent.log" &
  A=$!; pids+=($A)
  cycles() { grep -c "cycle done" "$W/agent.log" || true; }
  until (( $(cycles) >= 3 )); do sleep 0.01; done
  c0=$(cpu_ms $A)
  until (( $(cycles) >= CYCLES + 3 )); do sleep 0.01; done
  c1=$(cpu_ms $A); rss=$(rss_kib $A)
  stop $A
  field() { grep "cycle done" "$W/agent.log" | tail -n "$CYCLES" | sed -n "s/.* $1=\([0-9.]*\).*/\1/p" | median; }
  a_cycle=$(field cycle_ms); a_poll=$(field poll_ms); a_render=$(field render_ms); a_push=$(field push_ms)
  a_cpu=$(python3 -c "print(($c1-$c0)/$CYCLES)")
  a_rss=$(python3 -c "print($rss/1024)")
  # The body the agent pushes, for the floor.
  ARKOUDA_PUSH_AGENT_CONFIG=/dev/null "$R"/arkouda-push-agent once --dry-run --arkouda "tcp://127.0.0.1:$SIM_PORT" >"$W/body.txt" 2>/dev/null
  stop $SIM_PID; stop $PG_PID

  # The Python reference.
  start_pg; start_sim "$L"
  python3 benches/tools/reference_exporter.py "tcp://127.0.0.1:$SIM_PORT" "127.0.0.1:$PG_PORT" bench $((CYCLES + 3)) "$(python3 -c "print($INTERVAL_MS/1000)")" >"$W/py.out"
  py() { tail -n "$CYCLES" "$W/py.out" | awk -v f="$1" '{print $f}' | median; }
  p_cycle=$(py 2); p_poll=$(py 3); p_push=$(py 4)
  p_cpu=$(python3 -c "
rows=[l.split() for l in open('$W/py.out')]
print((float(rows[-1][4])-float(rows[2][4]))/(len(rows)-3))")
  p_rss=$(python3 -c "print(int(open('$W/py.out').read().split()[-1])/1024)")
  # The poll's floor, on the simulator the Python run used.
  f_poll=$("$R"/examples/poll_floor "tcp://127.0.0.1:$SIM_PORT" $((CYCLES + 3)) | tail -n "$CYCLES" | awk '{print $2}' | median)
  stop $SIM_PID

  # The PUT's floor, on the Pushgateway the Python run used (it holds that run's group).
  f_put=$("$R"/examples/put_floor "127.0.0.1:$PG_PORT" $((CYCLES + 3)) "/metrics/job/arkouda/slurm_job_id/bench=$W/body.txt" | tail -n "$CYCLES" | awk '{print $2}' | median)
  stop $PG_PID
  python3 - "$L" "$a_cycle" "$a_poll" "$a_render" "$a_push" "$a_cpu" "$a_rss" "$p_cycle" "$p_poll" "$p_push" "$p_cpu" "$p_rss" "$f_poll" "$f_put" <<'PY'
import sys
L, ac, ap, ar, apu, acpu, arss, pc, pp, ppu, pcpu, prss, fpoll, fput = sys.argv[1], *map(float, sys.argv[2:])
floor = fpoll + fput
print(f"| {L} | {ac:.2f} ({ap:.2f} / {ar:.2f} / {apu:.2f}) | {acpu:.2f} | {arss:.1f} | {pc:.1f} ({pp:.1f} / {ppu:.1f}) | {pcpu:.1f} | {prss:.1f} | {floor:.2f} ({fpoll:.2f} + {fput:.2f}) | {pcpu/max(acpu,1e-9):.0f}× | {prss/arss:.1f}× | {apu/fput:.2f} | {ac/floor:.2f} |")
PY
done

(( EXTRAS )) || exit 0
echo
echo "One group per locale (the layout the agent does not use): the per-locale series of L locales PUT as L groups vs. one group, per cycle."
echo
echo "| locales | L groups: ms per cycle | 1 group: ms per cycle |"
echo "|---|---|---|"
for L in 64 256 1024; do
  start_pg
  mkdir -p "$W/groups"
  args=(); one=()
  python3 - "$L" "$W/groups" <<'PY'
import sys
n, d = int(sys.argv[1]), sys.argv[2]
help = "# TYPE arkouda_locale_memory_used_bytes gauge\n"
with open(f"{d}/all.txt", "w") as all_:
    all_.write(help)
    for l in range(n):
        body = f'arkouda_locale_memory_used_bytes{{locale="{l}"}} {1e9 + l}\narkouda_locale_memory_used_ratio{{locale="{l}"}} 0.25\narkouda_locale_physical_memory_bytes{{locale="{l}"}} 274877906944\narkouda_locale_processing_units{{locale="{l}"}} 128\n'
        open(f"{d}/{l}.txt", "w").write(body)
        all_.write(body)
PY
  for ((l = 0; l < L; l++)); do args+=("/metrics/job/arkouda/slurm_job_id/bench/locale/$l=$W/groups/$l.txt"); done
  per=$("$R"/examples/put_floor "127.0.0.1:$PG_PORT" 5 "${args[@]}" | tail -n 3 | awk '{print $2}' | median)
  stop $PG_PID; start_pg
  single=$("$R"/examples/put_floor "127.0.0.1:$PG_PORT" 6 "/metrics/job/arkouda/slurm_job_id/bench=$W/groups/all.txt" | tail -n 3 | awk '{print $2}' | median)
  stop $PG_PID
  echo "| $L | $per | $single |"
  rm -rf "$W/groups"
done

echo
echo "Start to first push (sim already answering, 1024 locales), 5 runs:"
start_pg; start_sim 1024
for i in 1 2 3 4 5; do
  t0=$(date +%s.%N)
  ARKOUDA_PUSH_AGENT_CONFIG=/dev/null "$R"/arkouda-push-agent run --arkouda "tcp://127.0.0.1:$SIM_PORT" \
    --pushgateway "http://127.0.0.1:$PG_PORT" --job-id "start$i" --interval 10s --lock-dir "$W" 2>"$W/start.log" &
  A=$!
  until grep -q "pushing to the Pushgateway" "$W/start.log"; do sleep 0.002; done
  stop $A
  python3 - "$t0" "$W/start.log" <<'PY'
import sys, datetime
t0 = float(sys.argv[1])
line = next(l for l in open(sys.argv[2]) if "pushing to the Pushgateway" in l)
ts = datetime.datetime.strptime(line.split()[0][:26] + "Z", "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()
print(f"  {(ts - t0) * 1e3:.1f} ms")
PY
done
