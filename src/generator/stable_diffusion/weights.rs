//! The weights folder (diffusers layout) and loading from it with errors that say exactly what
//! is wrong: which file is missing, or which tensor of which file is missing or has the wrong
//! shape, and what was expected. Nothing is ever downloaded.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::preset::Spec;

/// The files one preset needs, found in the weights folder.
#[derive(Debug, Clone)]
pub(crate) struct WeightFiles {
    pub unet: PathBuf,
    pub vae: PathBuf,
    /// (tokenizer folder, text encoder) per text encoder, in order.
    pub text: Vec<(PathBuf, PathBuf)>,
    pub tiny_decoder: Option<PathBuf>,
}

/// The first of `names` that is a file in `dir/folder`, or an error listing what was looked
/// for and naming whatever else stands at those paths.
fn find(dir: &Path, folder: &str, names: &[&str], what: &str) -> anyhow::Result<PathBuf> {
    let base = if folder.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(folder)
    };
    let paths: Vec<PathBuf> = names.iter().map(|name| base.join(name)).collect();
    if let Some(found) = paths.iter().find(|path| path.is_file()) {
        return Ok(found.clone());
    }
    let wanted: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "missing {what}: expected {} (see the README, \"Model weights\"){}",
        wanted.join(" or "),
        not_files(&paths)
    )
}

/// "; /w/unet/x.safetensors is a FIFO, not a regular file" for each of `paths` that exists but
/// is not a regular file (after symlinks): a file that is there in name only is not "missing".
fn not_files(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .filter_map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            (!metadata.is_file()).then(|| {
                format!(
                    "; {} is {}, not a regular file",
                    path.display(),
                    crate::checked_fs::kind_of(metadata.file_type())
                )
            })
        })
        .collect()
}

impl WeightFiles {
    /// Finds every file of `spec` under `dir`; half-precision files first when `prefer_fp16`.
    pub(crate) fn locate(
        dir: &Path,
        spec: &Spec,
        prefer_fp16: bool,
        tiny_decoder: bool,
    ) -> anyhow::Result<Self> {
        if let Some(checkpoint) = single_file_checkpoint(dir) {
            bail!(
                "{} is a single-file checkpoint; dreamframe reads a model's diffusers folder \
                 (unet/, vae/, text_encoder/, tokenizer/): download {} as the README shows \
                 (\"Model weights\") and set model.weights-dir to that folder",
                checkpoint.display(),
                spec.repo
            );
        }
        match std::fs::metadata(dir) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(metadata) => bail!(
                "weights folder {} is {}, not a folder: set model.weights-dir to the model's \
                 diffusers folder (see the README, \"Model weights\")",
                dir.display(),
                crate::checked_fs::kind_of(metadata.file_type())
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
                "weights folder {} does not exist (see the README, \"Model weights\")",
                dir.display()
            ),
            Err(error) => bail!("cannot look at weights folder {}: {error}", dir.display()),
        }
        let ordered = |full: &'static str, half: &'static str| {
            if prefer_fp16 {
                [half, full]
            } else {
                [full, half]
            }
        };
        let diffusers = ordered(
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.fp16.safetensors",
        );
        let text_model = ordered("model.safetensors", "model.fp16.safetensors");
        let mut text = Vec::new();
        let encoders = [
            ("tokenizer", "text_encoder", spec.clip.is_some()),
            ("tokenizer_2", "text_encoder_2", spec.clip2.is_some()),
        ];
        for (tokenizer, encoder, used) in encoders {
            if used {
                let folder = dir.join(tokenizer);
                if !super::tokenizer::present(&folder) {
                    let files = ["vocab.json", "merges.txt", "tokenizer.json"];
                    let paths: Vec<PathBuf> = files.iter().map(|f| folder.join(f)).collect();
                    bail!(
                        "missing {} tokenizer: expected {} in {} (see the README, \"Model weights\"){}",
                        spec.name,
                        super::tokenizer::FILES,
                        folder.display(),
                        not_files(&paths)
                    );
                }
                text.push((
                    folder,
                    find(
                        dir,
                        encoder,
                        &text_model,
                        &format!("{} text encoder", spec.name),
                    )?,
                ));
            }
        }
        Ok(Self {
            unet: find(dir, "unet", &diffusers, &format!("{} UNet", spec.name))?,
            vae: find(dir, "vae", &diffusers, &format!("{} VAE", spec.name))?,
            text,
            tiny_decoder: if tiny_decoder {
                Some(find_tiny_decoder(dir, spec)?)
            } else {
                None
            },
        })
    }
}

/// `dir` itself, or the only model file in a folder without `unet/`, when it is a single-file
/// checkpoint (`.safetensors`/`.ckpt` with the original LDM names, as model sites offer them).
fn single_file_checkpoint(dir: &Path) -> Option<PathBuf> {
    let is_checkpoint = |p: &Path| {
        p.is_file()
            && matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("safetensors" | "ckpt")
            )
    };
    if is_checkpoint(dir) {
        return Some(dir.to_path_buf());
    }
    if !dir.is_dir() || dir.join("unet").is_dir() {
        return None;
    }
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| {
            is_checkpoint(p)
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("taes"))
        })
}

/// The tiny decoder's file when it is in the weights folder (for the adapt ladder, which may
/// switch in-betweens to it); `None` when it is not.
pub(crate) fn optional_tiny_decoder(dir: &Path, spec: &Spec) -> Option<PathBuf> {
    find_tiny_decoder(dir, spec).ok()
}

/// The tiny decoder as published on GitHub (`taesd_decoder.safetensors` in the weights folder)
/// or as the diffusers repo (`madebyollin/taesd` downloaded into `taesd/`).
fn find_tiny_decoder(dir: &Path, spec: &Spec) -> anyhow::Result<PathBuf> {
    let folder = spec.taesd_file.trim_end_matches("_decoder.safetensors");
    let names = [
        spec.taesd_file.to_string(),
        format!("{folder}/diffusion_pytorch_model.safetensors"),
        format!("{folder}/diffusion_pytorch_model.fp16.safetensors"),
    ];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    find(dir, "", &names, "tiny decoder (decode.tiny-decoder = true)")
}

/// A safetensors file whose every tensor is checked against the layout the model asks for.
struct CheckedFile {
    tensors: MmapedSafetensors,
    path: PathBuf,
}

impl SimpleBackend for CheckedFile {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let view = self.tensors.get(name).map_err(|_| {
            candle_core::Error::Msg(format!(
                "{}: missing tensor {name} (expected shape {:?})",
                self.path.display(),
                shape.dims()
            ))
        })?;
        if view.shape() != shape.dims() {
            return Err(candle_core::Error::Msg(format!(
                "{}: tensor {name} has shape {:?}, expected {:?}",
                self.path.display(),
                view.shape(),
                shape.dims()
            )));
        }
        self.tensors.load(name, device)?.to_dtype(dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.tensors.load(name, device)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.get(name).is_ok()
    }
}

/// A VarBuilder over the safetensors file at `path` (memory-mapped), every tensor checked.
pub(crate) fn checked_var_builder(
    path: &Path,
    dtype: DType,
    device: &Device,
    what: &str,
) -> anyhow::Result<VarBuilder<'static>> {
    let tensors = crate::sys::map_safetensors(path)
        .with_context(|| format!("cannot read {what} weights {}", path.display()))?;
    let backend = CheckedFile {
        tensors,
        path: path.to_path_buf(),
    };
    Ok(VarBuilder::from_backend(
        Box::new(backend),
        dtype,
        device.clone(),
    ))
}

/// Memory-maps `path` and builds a model from it with `build`, every tensor checked.
pub(crate) fn build_from<T>(
    path: &Path,
    dtype: DType,
    device: &Device,
    what: &str,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> anyhow::Result<T> {
    let vb = checked_var_builder(path, dtype, device, what)?;
    build(vb)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("{what} weights {} do not fit the model", path.display()))
}
