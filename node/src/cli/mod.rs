//! One module per subcommand family. Each exposes its clap arguments and a
//! `run` function that returns the process exit code.

pub mod assess;
pub mod ipv6;
