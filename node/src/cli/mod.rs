//! One module per subcommand family. Each exposes its clap arguments and a
//! `run` function that returns the process exit code.

pub mod assess;
pub mod audit;
pub mod authority;
pub mod catalog;
pub mod credential;
pub mod dataset;
pub mod init;
pub mod ipv6;
pub mod researcher;
pub mod revocations;
pub mod run;
pub mod status;
