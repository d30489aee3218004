//! Integration tests: one binary, a module per area (config files, the pipeline driven through
//! `run` with fakes, the real binary).

mod analyze;
mod appliance;
mod binary;
mod config_files;
mod deb;
mod hostile;
mod pipeline;
mod qemu;
mod sd_reference;
mod stable_diffusion;
mod systemd;
mod util;
mod vendor;
