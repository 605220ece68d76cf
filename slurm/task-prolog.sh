#!/bin/bash
# arkouda-push-agent Slurm TaskProlog: tells the job's user where the job's Grafana
# dashboard is, in the job's own output, for jobs whose agent the Prolog started:
#
#   arkouda-srun: dashboard: https://grafana.example.org/d/arkouda-job?var-job_id=4242&...
#
#   slurm.conf:  TaskProlog=/usr/libexec/arkouda-push-agent/task-prolog
#
# Runs as the job's user before each task; Slurm reads its standard output (a line
# `print TEXT` puts TEXT into the task's output). Every decision is `arkouda-push-agent slurm
# task-prolog` (dashboard_url set, task 0 of the step, the Prolog's files of this run on this
# node); it never asks Slurm. Prints at most that one line, within 3 s, and always exits 0.
bin=${ARKOUDA_PUSH_AGENT_BIN:-/usr/bin/arkouda-push-agent}
[ -x "$bin" ] || exit 0
export ARKOUDA_PUSH_AGENT_CONFIG=${ARKOUDA_PUSH_AGENT_CONFIG:-/etc/arkouda-push-agent/config.toml}
unset ARKOUDA_PUSH_AGENT_BIN
/usr/bin/timeout -k 1 2 "$bin" slurm task-prolog </dev/null 2>/dev/null | /usr/bin/head -n 1
exit 0
