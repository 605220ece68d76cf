//! Signals for `run`: the first SIGTERM, SIGINT or SIGHUP asks for a clean stop (every
//! sink ended, the group deleted); while stopping, only a second SIGINT abandons the
//! cleanup. Handled on a thread of its own, installed before anything can block, so no
//! signal is lost.

use tokio::sync::watch;

/// What a signal asks of `run`, given how many stop requests came before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalAction {
    /// The first SIGTERM, SIGINT or SIGHUP: stop cleanly (delete the group, exit 0).
    Stop,
    /// SIGTERM or SIGHUP again while stopping: the same request again, ignored, so that
    /// `systemctl stop` plus the Epilog's own SIGTERM (or a terminal that closes while the
    /// agent stops) never abandon the delete. The delete is bounded by `shutdown_timeout`.
    Again,
    /// SIGINT while stopping (Ctrl-C twice): exit at once, without the delete.
    Abort,
}

/// The signal rule of `run`: the first SIGTERM, SIGINT or SIGHUP stops cleanly; only a
/// second SIGINT aborts the cleanup (SIGKILL always does).
pub fn signal_action(sig: i32, stopping: bool) -> SignalAction {
    match (stopping, sig) {
        (false, _) => SignalAction::Stop,
        (true, signal_hook::consts::SIGINT) => SignalAction::Abort,
        (true, _) => SignalAction::Again,
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// SIGTERM, SIGINT or SIGHUP (a terminal that closes: an agent started by hand in an
/// `salloc` shell) once: `shutdown` becomes true (clean stop). Then [`signal_action`].
pub fn shutdown_signal() -> std::io::Result<watch::Receiver<bool>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let (tx, rx) = watch::channel(false);
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            let mut told_again = false;
            for sig in signals.forever() {
                match signal_action(sig, stopping) {
                    SignalAction::Stop => {
                        tracing::info!(signal = signal_name(sig), "stop requested");
                        stopping = true;
                        let _ = tx.send(true);
                    }
                    SignalAction::Again => {
                        if !told_again {
                            told_again = true;
                            tracing::info!(signal = signal_name(sig), "already stopping: the delete goes on (a second SIGINT or SIGKILL abandons it)");
                        }
                    }
                    SignalAction::Abort => {
                        crate::console::err(format_args!(
                            "arkouda-push-agent: second SIGINT, exiting at once without cleanup"
                        ));
                        std::process::exit(128 + sig);
                    }
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

    /// The first signal of any kind stops cleanly; while stopping only SIGINT aborts.
    #[test]
    fn signal_rule() {
        use SignalAction::*;
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            assert_eq!(signal_action(sig, false), Stop, "{sig}");
        }
        assert_eq!(signal_action(SIGTERM, true), Again);
        assert_eq!(signal_action(SIGHUP, true), Again);
        assert_eq!(signal_action(SIGINT, true), Abort);
    }
}
