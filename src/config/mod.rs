//! Settings: one definition per setting, resolved from four layers and remembered with
//! the layer each value came from.
//!
//! Precedence, lowest to highest: built-in default < TOML file (`--config PATH`, else
//! `/etc/arkouda-push-agent/config.toml` when it exists) < environment < flags. Every flag
//! `--foo-bar` is the file key `foo_bar` and the variable `ARKOUDA_PUSH_AGENT_FOO_BAR`; some
//! keys also honour the names the old exporter, Arkouda and Slurm use ([`KEYS`] lists them).
//!
//! Secrets (tokens, passwords) are never flags and never plain keys of the file: they come
//! from a `*_file` key or from the environment, and are held as [`Secret`].
//!
//! This module only reads and validates; it never connects anywhere. A bad value is a
//! [`ConfigError`] that names the key and its source; the binary turns it into exit code 2.

pub mod reference;

mod keys;
mod layers;
mod model;
mod read;

pub use keys::*;
pub use layers::*;
pub use model::*;
use read::*;

#[cfg(test)]
mod tests;
