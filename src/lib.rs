//! arkouda-push-agent: polls an Arkouda metrics server and ships its metrics, grouped by
//! job, to Prometheus Pushgateways, remote-write receivers or a scrape endpoint, and
//! removes the job's groups when the job ends.
//!
//! The data path reads top to bottom and nothing imports upward:
//! [`arkouda`] (ZeroMQ protocol → records) → [`translate`] (records → metric families)
//! → [`sinks`] (families → Pushgateway, remote write, `/metrics`), driven by the lifecycle
//! in [`agent`]. [`groups`] knows a job's groups on the Pushgateways (for the agent, the
//! Slurm hooks in [`slurm`] and [`sweep`]); [`process`] detaches, locks and watches;
//! [`config`] resolves settings from defaults, file, environment and flags; [`cli`] defines
//! the command line; [`console`] prints what the subcommands print, quietly past a closed
//! pipe. Nothing but `main.rs` imports [`agent`].

/// The agent's version, in `arkouda_agent_info` and the HTTP User-Agent.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod agent;
pub mod arkouda;
pub mod cli;
pub mod config;
pub mod console;
pub mod groups;
pub mod process;
pub mod secret;
pub mod sinks;
pub mod slurm;
pub mod sweep;
pub mod text;
pub mod translate;
