//! Slurm integration: the decisions and actions behind `arkouda-push-agent slurm prolog |
//! epilog | epilog-slurmctld`, which the thin scripts in `slurm/` run as root from slurmd
//! and slurmctld.
//!
//! What it decides ([`hooks`], pure and tested as tables): whether a job gets an agent
//! (`[slurm] select`: a comment marker, all jobs, or listed partitions), whether this node
//! is the job's first node (Slurm hostlists expanded by [`hostlist`], never by calling
//! `scontrol`), which user the agent runs as, and where its Arkouda server is (the
//! connection-info template, else the first node, on `metrics_port`). What it does
//! ([`actions`]): start the agent (systemd unit when systemd runs, else `run --daemonize`),
//! stop it at the job's end, and delete the job's groups as a backstop; on the controller,
//! optionally store the job's summary in its AdminComment ([`admin_comment`]).
//!
//! What it must never do: run the agent as root; call `scontrol`/`squeue` from a node's
//! hook (they retry for a minute when slurmctld is down; the controller's hook calls
//! `squeue` and `sacctmgr` only, each bounded); take longer than the hook budgets (Prolog
//! 5 s, Epilog 10 s, EpilogSlurmctld 6 s) whatever the Pushgateway does; signal a process
//! it cannot prove is this job's agent; or fail a Prolog (a failing Prolog drains the node
//! — the scripts exit 0, and the exit code here only feeds their log).

pub mod actions;
pub mod admin_comment;
pub mod hooks;
pub mod hostlist;

use std::collections::BTreeMap;

use crate::config::{Resolved, Settings};

/// Which hook is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Prolog,
    Epilog,
    EpilogSlurmctld,
    TaskProlog,
}

/// Runs one hook; true when it did what it had to (or had nothing to do).
pub async fn run_hook(
    hook: Hook,
    settings: &Settings,
    resolved: &Resolved,
    env: &BTreeMap<String, String>,
) -> bool {
    match hook {
        Hook::Prolog => actions::prolog(settings, resolved, env),
        Hook::Epilog => actions::epilog(settings, env).await,
        Hook::EpilogSlurmctld => actions::epilog_slurmctld(settings, env).await,
        Hook::TaskProlog => actions::task_prolog(settings, env),
    }
}

#[cfg(test)]
mod tests {
    /// The three hook scripts are one body with a different header (name and time limit):
    /// each stays a single self-contained file so a site can drop it into `prolog.d/`, and
    /// this test keeps the copies from drifting apart.
    #[test]
    fn hook_scripts_share_one_body() {
        let body = |text: &str| -> String {
            let start = text.find("\nbin=").expect("the shared body starts at bin=");
            text[start..].to_string()
        };
        let prolog = include_str!("../../slurm/prolog.sh");
        let epilog = include_str!("../../slurm/epilog.sh");
        let ctld = include_str!("../../slurm/epilog-slurmctld.sh");
        assert_eq!(
            body(prolog),
            body(epilog),
            "prolog.sh and epilog.sh differ below `bin=`"
        );
        assert_eq!(
            body(prolog),
            body(ctld),
            "prolog.sh and epilog-slurmctld.sh differ below `bin=`"
        );
        for (text, hook) in [
            (prolog, "prolog"),
            (epilog, "epilog"),
            (ctld, "epilog-slurmctld"),
        ] {
            assert!(text.contains(&format!("\nhook={hook}\n")), "{hook}");
        }
    }
}
