//! arkouda-push-agent: polls an Arkouda metrics server and ships its metrics, grouped by
//! job, to Prometheus Pushgateways, remote-write receivers or a scrape endpoint, and
//! removes the job's groups when the job ends.
//!
//! The data path reads top to bottom and nothing imports upward:
//! [`arkouda`] (ZeroMQ protocol → records) → [`translate`] (records → metric families,
//! once per cycle, in the agent's own [`model`], which also writes the text exposition)
//! → [`sinks`] (each owns its destination: Pushgateway, remote write,
//! `/metrics`), driven by [`lifecycle`], which knows no sink; [`wiring`] builds the sinks
//! the settings configure. [`groups`] knows a job's groups on the Pushgateways (for the
//! sinks, the Slurm hooks in [`slurm`] and [`sweep`]); [`process`] detaches, locks and
//! watches; [`signals`] turns signals into a stop; [`config`] resolves settings from
//! defaults, file, environment and flags; [`cli`] defines the command line; [`console`]
//! prints what the subcommands print, quietly past a closed pipe. Nothing but `main.rs`
//! imports [`lifecycle`] and [`wiring`].

/// The agent's version, in `arkouda_agent_info` and the HTTP User-Agent.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod arkouda;
pub mod cli;
pub mod config;
pub mod console;
pub mod groups;
pub mod lifecycle;
pub mod model;
pub mod process;
pub mod secret;
pub mod signals;
pub mod sinks;
pub mod slurm;
pub mod summary;
pub mod sweep;
pub mod text;
pub mod translate;
pub mod wiring;
