//! One module per subcommand family. Each exposes its clap arguments and a
//! `run` function that returns the process exit code.

pub mod agreement;
pub mod assess;
pub mod audit;
pub mod authority;
pub mod backup;
pub mod catalog;
pub mod contract;
pub mod credential;
pub mod data;
pub mod dataset;
pub mod demo;
pub mod filing;
pub mod init;
pub mod ipv6;
pub mod offers;
pub mod records;
pub mod researcher;
pub mod revocations;
pub mod run;
pub mod status;
pub mod transfer;
