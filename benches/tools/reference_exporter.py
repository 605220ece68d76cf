#!/usr/bin/env python3
"""The reference a site would otherwise use: a Python loop built on prometheus_client (the
library of the old arkouda_metrics_exporter) and pyzmq that polls the same metrics server
and pushes the same group with push_to_gateway, mapped the way the old exporter maps
records (one Gauge per metric, labels per record). Prints one line per cycle:
`cycle <wall_ms> <poll_ms> <push_ms> <process_cpu_ms_so_far> <rss_kib>`.

    reference_exporter.py tcp://127.0.0.1:5556 127.0.0.1:9091 JOB_ID CYCLES INTERVAL_S
"""
import json
import sys
import time

import zmq
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

endpoint, gateway, job_id, cycles, interval = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
ctx = zmq.Context()
sock = ctx.socket(zmq.REQ)
sock.setsockopt(zmq.RCVTIMEO, 10000)
sock.connect(endpoint)


def request(category):
    arg = json.dumps([json.dumps({"key": "category", "dtype": "str", "val": category})])
    sock.send_string(json.dumps({"user": "bench", "token": "", "cmd": "metrics", "format": "STRING", "args": arg, "size": 1}))
    return json.loads(json.loads(sock.recv_string())["msg"])


info = request("SERVER_INFO")
NAMES = {
    ("NUM_REQUESTS", "GLOBAL"): "arkouda_number_of_requests_per_command",
    ("NUM_REQUESTS", "USER"): "arkouda_per_user_number_of_requests_per_command",
    ("RESPONSE_TIME", "GLOBAL"): "arkouda_response_times_per_command",
    ("AVG_RESPONSE_TIME", "GLOBAL"): "arkouda_avg_response_times_per_command",
    ("TOTAL_RESPONSE_TIME", "GLOBAL"): "arkouda_total_response_times_per_command",
    ("TOTAL_MEMORY_USED", "GLOBAL"): "arkouda_total_memory_used_per_command",
    ("NUM_ERRORS", "GLOBAL"): "arkouda_number_of_errors_per_error_type",
}
for i in range(cycles):
    start = time.monotonic()
    records = request("ALL")
    polled = time.monotonic()
    registry = CollectorRegistry()
    gauges = {}

    def gauge(name, labels):
        if name not in gauges:
            gauges[name] = Gauge(name, name.replace("_", " "), labels, registry=registry)
        return gauges[name]

    for r in records:
        cat, scope = r["category"], r["scope"]
        if scope == "LOCALE":
            labels = {"locale_name": r["locale_name"], "locale_num": str(r["locale_num"]), "locale_hostname": r["locale_hostname"]}
            name = "arkouda_memory_used_per_locale" if r["name"] == "arkouda_memory_used_per_locale" else "arkouda_pct_memory_used_per_locale"
        elif scope == "USER":
            labels = {"command": r["name"], "user": r["user"]}
            name = NAMES[(cat, scope)]
        else:
            labels = {"command": r["name"]} if cat != "NUM_ERRORS" else {"error_type": r["name"]}
            name = NAMES.get((cat, scope))
            if name is None:
                continue
        gauge(name, list(labels)).labels(**labels).set(r["value"])
    for loc in info["locales"]:
        gauge("arkouda_memory_per_locale", ["locale_num"]).labels(locale_num=loc["id"]).set(loc["physical_memory"])
    push_to_gateway(gateway, job="arkouda", grouping_key={"slurm_job_id": job_id}, registry=registry)
    end = time.monotonic()
    with open("/proc/self/status") as status:
        rss = next(int(l.split()[1]) for l in status if l.startswith("VmRSS"))
    cpu = time.process_time() * 1e3
    print(f"cycle {(end - start) * 1e3:.3f} {(polled - start) * 1e3:.3f} {(end - polled) * 1e3:.3f} {cpu:.3f} {rss}", flush=True)
    time.sleep(max(0.0, interval - (end - start)))
