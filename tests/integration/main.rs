//! Integration tests: one binary, a module per area (config files, the pipeline driven through
//! `run` with fakes, the real binary).

// As in the library: the one `unsafe` (util::before_exec) says why it is sound.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod appliance;
mod binary;
mod config_files;
mod deb;
mod hostile;
mod pipeline;
mod qemu;
mod systemd;
mod util;
mod vendor;
