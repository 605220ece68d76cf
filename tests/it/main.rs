//! Every integration test in one binary (one link instead of one per file), a module per
//! area. The expensive components each test needs (a Pushgateway, Prometheus, a Slurm
//! cluster) are real; `common` starts them, `slurm_cluster` builds Slurm clusters.
//! Heavy tests take the whole machine (.config/nextest.toml).

mod common;
#[path = "common/slurm.rs"]
mod slurm_cluster;

mod broken_pipe;
mod deb;
mod encoding;
mod faults;
mod lifecycle;
mod monitoring;
mod push_cycle;
mod remote_write;
mod scale;
mod security;
mod slurm;
mod sweep;
mod systemd_live;
