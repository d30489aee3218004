//! Tests of the Stable Diffusion generator that need its internals: `reference` compares each
//! part against diffusers' and transformers' golden files; `tiny` runs tiny random-weight models
//! in the real layout through the real loader (and the display's `run`).

mod reference;
mod tiny;
