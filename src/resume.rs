//! Resume: the generator's place in its walk (run seed, next keyframe index, last keyframe
//! latent) saved atomically to `resume.json` in the output (state) folder every few keyframes, so
//! after a restart or reboot the display continues where it was instead of starting over.
//!
//! Written by the keyframe thread (never the display path) through temp file + rename. Read once
//! at start: a missing file means a fresh start; a corrupt one, or one from another generator or
//! seed, means a fresh start with a warning, never a crash. "Corrupt" includes what a hand edit
//! can make: not a regular file (a FIFO, a link to /dev/zero), larger than `MAX_FILE_BYTES`, a
//! non-finite latent value, a shape that doesn't match, an index past `MAX_INDEX`.

use std::path::Path;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

pub(crate) const FILE_NAME: &str = "resume.json";
/// Keyframes between saves.
pub(crate) const SAVE_EVERY: u64 = 4;
const VERSION: u32 = 1;
/// The largest resume file read: an SDXL latent (4x128x128 values) is about 1 MiB of JSON.
pub(crate) const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// The largest keyframe index accepted: a keyframe a second for 285 million years.
pub(crate) const MAX_INDEX: u64 = 1 << 53;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResumeState {
    pub version: u32,
    pub generator: String,
    pub seed: u64,
    /// Index of the next keyframe to generate.
    pub next_index: u64,
    pub shape: Vec<usize>,
    /// The last keyframe's latent, row-major.
    pub latent: Vec<f32>,
}

impl ResumeState {
    pub(crate) fn capture(
        generator: &str,
        seed: u64,
        next_index: u64,
        latent: &Tensor,
    ) -> anyhow::Result<Self> {
        let values = latent
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        // JSON has no NaN or infinity: such a state would be saved as `null` and refused later.
        anyhow::ensure!(
            values.iter().all(|v| v.is_finite()),
            "the latent holds non-finite values; not saved"
        );
        Ok(Self {
            version: VERSION,
            generator: generator.to_string(),
            seed,
            next_index,
            shape: latent.dims().to_vec(),
            latent: values,
        })
    }

    pub(crate) fn latent(&self, device: &Device) -> anyhow::Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.latent,
            self.shape.as_slice(),
            device,
        )?)
    }

    pub(crate) fn save(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec(self)?;
        crate::checked_fs::write_atomic(path, &json)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The saved state; `Ok(None)` when there is none, an error when the file is unreadable.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        let bytes = match crate::checked_fs::read_regular(path, MAX_FILE_BYTES) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        let state: Self = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a resume state", path.display()))?;
        anyhow::ensure!(
            state.version == VERSION,
            "{} has version {}, expected {VERSION}",
            path.display(),
            state.version
        );
        let count = state
            .shape
            .iter()
            .try_fold(1usize, |count, &dim| count.checked_mul(dim));
        anyhow::ensure!(
            count == Some(state.latent.len()),
            "{} holds {} values for shape {:?}",
            path.display(),
            state.latent.len(),
            state.shape
        );
        anyhow::ensure!(
            state.latent.iter().all(|v| v.is_finite()),
            "{} holds a non-finite latent value",
            path.display()
        );
        anyhow::ensure!(
            state.next_index <= MAX_INDEX,
            "{} has next_index {}, more than the {MAX_INDEX} allowed",
            path.display(),
            state.next_index
        );
        Ok(Some(state))
    }

    /// The saved seed, if a readable state exists (for choosing the run seed before start).
    pub(crate) fn saved_seed(path: &Path) -> Option<u64> {
        Self::load(path).ok().flatten().map(|state| state.seed)
    }
}

/// The state to resume from for `generator` and `seed`, or `None` (with a warning when a file
/// was there but can't be used).
pub(crate) fn usable(path: &Path, generator: &str, seed: u64) -> Option<ResumeState> {
    match ResumeState::load(path) {
        Ok(None) => None,
        Ok(Some(state)) if state.generator != generator || state.seed != seed => {
            log::warn!(
                "{}",
                crate::events::ResumeIgnored {
                    path: path.display().to_string(),
                    saved_generator: state.generator.clone(),
                    saved_seed: state.seed,
                    generator: generator.into(),
                    seed,
                }
            );
            None
        }
        Ok(Some(state)) => Some(state),
        Err(error) => {
            log::warn!(
                "{}",
                crate::events::ResumeUnreadable {
                    error: format!("{error:#}")
                }
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(FILE_NAME);
        assert_eq!(ResumeState::load(&path).unwrap(), None);
        let latent = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], (2, 2), &Device::Cpu).unwrap();
        let state = ResumeState::capture("cppn", 7, 12, &latent).unwrap();
        state.save(&path).unwrap();
        let loaded = ResumeState::load(&path).unwrap().expect("saved");
        assert_eq!(loaded, state);
        assert_eq!(
            loaded
                .latent(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        assert!(usable(&path, "cppn", 7).is_some());
        assert!(
            usable(&path, "cppn", 8).is_none(),
            "another seed starts fresh"
        );
        assert!(
            usable(&path, "stable-diffusion/sd-turbo/cpu", 7).is_none(),
            "another generator starts fresh"
        );
        std::fs::write(&path, "{\"version\":1,").unwrap();
        assert!(ResumeState::load(&path).is_err());
        assert!(
            usable(&path, "cppn", 7).is_none(),
            "a corrupt file starts fresh"
        );
    }

    fn saved(dir: &Path, json: &str) -> std::path::PathBuf {
        let path = dir.join(FILE_NAME);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, json).unwrap();
        path
    }

    #[test]
    fn hand_edited_states_that_cannot_work_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let good = r#"{"version":1,"generator":"cppn","seed":7,"next_index":4,"shape":[2],"latent":[1.0,2.0]}"#;
        assert!(ResumeState::load(&saved(dir.path(), good))
            .unwrap()
            .is_some());
        for (bad, why) in [
            (good.replace("1.0,2.0", "1e39,2.0"), "non-finite"),
            (good.replace("1.0,2.0", "null,2.0"), "not a resume state"),
            (good.replace(":4,", ":18446744073709551615,"), "next_index"),
            (
                good.replace("[2]", "[4294967296,4294967296,4294967296]"),
                "values for shape",
            ),
        ] {
            let error = ResumeState::load(&saved(dir.path(), &bad)).unwrap_err();
            assert!(format!("{error:#}").contains(why), "{why}: {error:#}");
        }
        // A non-finite latent is never saved in the first place.
        let latent = Tensor::from_slice(&[f32::NAN, 1.0], 2, &Device::Cpu).unwrap();
        assert!(ResumeState::capture("cppn", 7, 4, &latent).is_err());
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(FILE_NAME);
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let error = ResumeState::load(&path).unwrap_err();
        assert!(
            format!("{error:#}").contains("character device"),
            "{error:#}"
        );
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let error = ResumeState::load(&path).unwrap_err();
        assert!(format!("{error:#}").contains("FIFO"), "{error:#}");
        assert!(usable(&path, "cppn", 7).is_none(), "a fresh start");
    }
}
