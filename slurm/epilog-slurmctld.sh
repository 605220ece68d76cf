#!/bin/bash
# arkouda-push-agent EpilogSlurmctld: on the controller, at the end of every job, deletes the
# groups of a selected job: the backstop for a node that crashed before its Epilog ran.
#
#   slurm.conf:  EpilogSlurmctld=/usr/libexec/arkouda-push-agent/epilog-slurmctld   (as the Debian package installs it)
#
# Thin on purpose: every decision is `arkouda-push-agent slurm epilog-slurmctld`, where it is
# tested. Runs as root with no PATH, so every command is an absolute path. Needs neither
# SLURM_CONF nor SLURM_NODELIST (slurmctld sets neither). Quick: one Pushgateway query per
# selected job, bounded; `squeue` only for a requeued job. With [slurm] admin_comment it
# also waits (bounded) for the job's summary_file and stores it in the job's AdminComment
# with `sacctmgr modify job` (beside the configured squeue; slurm.conf from its default
# place or SLURM_CONF), side by side with the delete. Always exits 0; trouble is logged
# (syslog, tag arkouda-push-agent[JOBID], or the file $ARKOUDA_PUSH_AGENT_HOOK_LOG).
hook=epilog-slurmctld
limit=5 # seconds for the binary (killed 1 s later): slurmctld runs this for every job

bin=${ARKOUDA_PUSH_AGENT_BIN:-/usr/bin/arkouda-push-agent}
export ARKOUDA_PUSH_AGENT_CONFIG=${ARKOUDA_PUSH_AGENT_CONFIG:-/etc/arkouda-push-agent/config.toml}
hook_log=${ARKOUDA_PUSH_AGENT_HOOK_LOG:-}
# Script settings only: the agent would warn about variables that name no setting.
unset ARKOUDA_PUSH_AGENT_BIN ARKOUDA_PUSH_AGENT_HOOK_LOG
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
tag="arkouda-push-agent[${SLURM_JOB_ID:-unknown}]"
t0=${EPOCHREALTIME//[.,]/}

log() {
    if [ -n "$hook_log" ] &&
        printf '%s %s %s: %s\n' "$(/usr/bin/date '+%Y-%m-%dT%H:%M:%S.%3N')" "$tag" "$hook" "$1" \
            >>"$hook_log" 2>/dev/null; then
        return
    fi
    /usr/bin/logger -t "$tag" -- "$hook: $1" 2>/dev/null
}

log "begin (job user ${SLURM_JOB_USER:-?}, nodes ${SLURM_JOB_NODELIST:-${SLURM_NODELIST:-?}})"
rc=
if [ ! -x "$bin" ]; then
    log "agent binary $bin is missing or not executable: no agent for this job"
else
    # Output goes to a file, not a pipe: nothing left running can hold this hook open.
    out=$(/usr/bin/mktemp /tmp/arkouda-push-agent-hook.XXXXXXXX 2>/dev/null) || out=/dev/null
    /usr/bin/timeout -k 1 "$limit" "$bin" slurm "$hook" </dev/null >"$out" 2>&1
    rc=$?
    if [ "$out" != /dev/null ]; then
        while IFS= read -r line; do log "$line"; done <"$out"
        /bin/rm -f "$out"
    fi
    case $rc in
    0) ;;
    124 | 137) log "$bin slurm $hook did not finish within ${limit}s and was killed" ;;
    2) log "configuration error (see above; config $ARKOUDA_PUSH_AGENT_CONFIG)" ;;
    *) log "$bin slurm $hook failed with exit code $rc" ;;
    esac
fi
log "end rc=${rc:-none} after $(((${EPOCHREALTIME//[.,]/} - t0) / 1000)) ms"
exit 0
