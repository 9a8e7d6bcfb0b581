//! Subcommands of the `bayspace` binary, one module each.

pub mod authority;
pub mod credential;
pub mod init;
