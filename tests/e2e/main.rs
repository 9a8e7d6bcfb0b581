//! The end-to-end tests: the real `bayspace` binary, run as a user runs it
//! (`bayspace_tests::bin`), against real node processes, sled files, TLS,
//! libp2p on IPv6, network namespaces, tmpfs mounts, Chromium and the
//! Python client. One module a subject, all in this one binary: the tests
//! run side by side in one process, so none may change the process's
//! environment or working directory, or take a fixed port, namespace or
//! mount point outside a namespace of its own.
//!
//! A check whose tool or permission is missing says so and passes, except
//! under `BAYSPACE_REQUIRE_ALL=1` (CI), where it fails
//! (`bayspace_tests::skip_or_fail`).

mod audit;
mod backup;
mod catalog;
mod certification;
mod cli_assess;
mod cli_contracts;
mod cli_identity;
mod cli_ipv6;
mod console;
mod daemon;
mod demo;
mod downloads;
mod full_disk;
mod host_paths;
mod hostile_peers;
mod metrics;
mod negotiation;
mod netns;
mod packaging;
mod python_client;
mod release_refusals;
mod soak;
mod store_version;
