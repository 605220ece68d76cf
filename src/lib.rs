//! arkouda-push-agent: polls an Arkouda metrics server and pushes its metrics to a
//! Prometheus Pushgateway, grouped by job, deleting the group when the job ends.
//!
//! The data path reads top to bottom and nothing imports upward:
//! [`arkouda`] (ZeroMQ protocol → records) → [`translate`] (records → metric families)
//! → [`sinks`] (families → a Pushgateway), driven by the lifecycle in [`agent`].
//! [`config`] resolves settings from defaults, file, environment and flags;
//! [`cli`] defines the command line.

pub mod agent;
pub mod arkouda;
pub mod cli;
pub mod config;
pub mod process;
pub mod secret;
pub mod sinks;
pub mod slurm;
pub mod sweep;
pub mod translate;
