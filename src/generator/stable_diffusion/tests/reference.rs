//! Stable Diffusion against its reference: golden files that diffusers and transformers (PyTorch,
//! CPU) wrote from tiny random-weight models in the real layouts, the real CLIP vocabulary, and the
//! model repos' scheduler configs (tools/reference/make_golden.py; regenerate with
//! tools/reference/regenerate.sh). Wherever diffusers draws random numbers the golden files hold
//! the draws, and we are fed the same ones. The pipelines: StableDiffusionPipeline and its img2img
//! twin for sd-1.x/2.x, StableDiffusionXLPipeline and its img2img twin for sdxl-turbo (added
//! conditioning); one UNet forward pass off their path (16 groups, the padding-0 downsampler,
//! latents of an odd size); the VAE on a batch of three per preset; every tensor of the reference
//! models is read by ours, and the UNets load through a file as a real model does.
//!
//! Tolerances: every comparison runs in f32 on both sides with the same (f16-exact) weights, so
//! what differs is the order of floating-point operations. Schedules are computed here in f64
//! and by diffusers in f32: 1e-5 relative. One scheduler step: 1e-5. Whole models (a UNet
//! loop, a VAE decode, TAESD) accumulate f32 rounding through every layer: 2e-4 absolute on
//! values of order 1, and of the largest value where values grow past 1 (a UNet loop's latents
//! reach ~60); the maxima actually measured are printed. Pictures as u8: at most 1 level
//! apart (a value at x.5 may round either way), and at most 0.5% of the values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::Preset;
use crate::generator::stable_diffusion::preset::{self, Spec};
use crate::generator::stable_diffusion::scheduler::Schedule;
use crate::generator::stable_diffusion::taesd::TinyDecoder;
use crate::generator::stable_diffusion::text_encoder::{
    Activation, TextConfig, TextEncoder, TextOutput,
};
use crate::generator::stable_diffusion::unet::{AddedConfig, UNet};
use crate::generator::stable_diffusion::vae::VaeDecoder;
use crate::generator::stable_diffusion::weights::checked_var_builder;
use crate::generator::stable_diffusion::{
    tokenizer, NoiseSource, SchedulerKind, SdOptions, StableDiffusionGenerator, TextConditioning,
    Theme,
};
use crate::generator::{Generator, KeyframeRequest};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use serde_json::Value;

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sd-reference")
}

fn golden() -> Value {
    let text = std::fs::read_to_string(folder().join("golden.json")).expect("read golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

fn tensors(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(folder().join(file), &Device::Cpu).expect("golden tensors load")
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .expect("a list of numbers")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("tensor values")
}

/// The largest |a - b|, after checking the lengths agree.
fn max_error(ours: &[f64], reference: &[f64], what: &str) -> f64 {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    ours.iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// Asserts |ours - reference| <= tolerance * max(1, |reference|) and returns the largest
/// absolute error.
fn assert_close(ours: &[f64], reference: &[f64], tolerance: f64, what: &str) -> f64 {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        assert!(
            (a - b).abs() <= tolerance * b.abs().max(1.0),
            "{what}[{i}]: ours {a}, diffusers {b} (tolerance {tolerance})"
        );
    }
    max_error(ours, reference, what)
}

fn preset(name: &str) -> Preset {
    match name {
        "sd-1.5" => Preset::Sd15,
        "sd-2.1" => Preset::Sd21,
        "sd-turbo" => Preset::SdTurbo,
        "sdxl-turbo" => Preset::SdxlTurbo,
        other => panic!("unknown preset {other}"),
    }
}

fn kind(name: &str) -> SchedulerKind {
    match name {
        "ddim" => SchedulerKind::Ddim,
        "euler-ancestral" => SchedulerKind::EulerAncestral,
        other => panic!("unknown scheduler {other}"),
    }
}

fn tensor(values: &[f64], shape: &[usize]) -> Tensor {
    let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).expect("tensor from golden values")
}

fn shape(case: &Value) -> Vec<usize> {
    floats(&case["shape"]).iter().map(|&v| v as usize).collect()
}

#[test]
fn schedulers_match_diffusers_for_every_preset_and_step_count() {
    let golden = golden();
    let (mut schedule_error, mut step_error, mut checked) = (0.0f64, 0.0f64, 0);
    for case in golden["schedulers"].as_array().expect("scheduler cases") {
        let (preset_name, kind_name) = (
            case["preset"].as_str().unwrap(),
            case["kind"].as_str().unwrap(),
        );
        let steps = case["steps"].as_u64().unwrap() as usize;
        let what = format!("{preset_name} {kind_name} {steps} steps");
        let spec = preset::spec(preset(preset_name));
        let schedule = Schedule::new(kind(kind_name), &spec.schedule, steps).expect("schedule");
        // Timesteps are whole numbers but for Euler's linspace (f32 fractions, written with 9
        // digits): 1e-6 relative.
        assert_close(
            schedule.timesteps(),
            &floats(&case["timesteps"]),
            1e-6,
            &format!("{what}: timesteps"),
        );
        let sigma = case["init_noise_sigma"].as_f64().unwrap();
        schedule_error = schedule_error.max(assert_close(
            &[schedule.init_noise_sigma()],
            &[sigma],
            1e-5,
            &format!("{what}: init_noise_sigma"),
        ));
        let (ours, reference) = match kind(kind_name) {
            SchedulerKind::Ddim => (schedule.alphas_cumprod(), floats(&case["alphas_cumprod"])),
            SchedulerKind::EulerAncestral => (schedule.sigmas().to_vec(), floats(&case["sigmas"])),
        };
        schedule_error = schedule_error.max(assert_close(&ours, &reference, 1e-5, &what));
        if case.get("sample").is_none() {
            continue;
        }
        // Each step from diffusers' own input, so an error shows at the step that makes it.
        let shape = shape(case);
        let mut sample = tensor(&floats(&case["sample"]), &shape);
        for index in 0..steps {
            let step = |key: &str| floats(&case[key][index]);
            let scaled = schedule.scale_model_input(&sample, index).expect("scale");
            step_error = step_error.max(assert_close(
                &values(&scaled),
                &step("scaled_inputs"),
                1e-5,
                &format!("{what}: scaled input of step {index}"),
            ));
            let noise = case["noises"][index]
                .as_array()
                .map(|_| tensor(&step("noises"), &shape));
            let prediction = tensor(&step("model_outputs"), &shape);
            let next = schedule
                .step(&prediction, index, &sample, noise.as_ref())
                .expect("step");
            step_error = step_error.max(assert_close(
                &values(&next),
                &step("prev_samples"),
                1e-5,
                &format!("{what}: step {index}"),
            ));
            sample = tensor(&step("prev_samples"), &shape);
            checked += 1;
        }
    }
    eprintln!(
        "schedulers vs diffusers: max abs error {schedule_error:.2e} (schedules), {step_error:.2e} ({checked} steps)"
    );
    assert!(checked > 50, "the golden file holds step cases");
}

#[test]
fn img2img_starts_where_the_diffusers_pipeline_starts() {
    let golden = golden();
    let img2img = &golden["img2img"];
    let shape = shape(img2img);
    let init = tensor(&floats(&img2img["init"]), &shape);
    let (mut error, mut refused) = (0.0f64, 0);
    for case in img2img["cases"].as_array().expect("img2img cases") {
        let (preset_name, kind_name) = (
            case["preset"].as_str().unwrap(),
            case["kind"].as_str().unwrap(),
        );
        let steps = case["steps"].as_u64().unwrap() as usize;
        let strength = case["strength"].as_f64().unwrap();
        let what = format!("{preset_name} {kind_name} {steps} steps, strength {strength}");
        let spec = preset::spec(preset(preset_name));
        let schedule = Schedule::new(kind(kind_name), &spec.schedule, steps).expect("schedule");
        let start = schedule.img2img_start(strength);
        if !case["runs"].as_bool().unwrap() {
            // Deliberate difference: where int(steps * strength) is 0 diffusers runs no step
            // (and refuses); we run the last one, so the walk never repeats a keyframe.
            assert_eq!(start, steps - 1, "{what}: at least one step");
            refused += 1;
            continue;
        }
        assert_close(
            &schedule.timesteps()[start..],
            &floats(&case["timesteps"]),
            1e-6,
            &format!("{what}: timesteps run"),
        );
        if let Some(noised) = case.get("noised") {
            let noise = tensor(&floats(&case["noise"]), &shape);
            let ours = schedule.add_noise(&init, &noise, start).expect("add noise");
            error = error.max(assert_close(&values(&ours), &floats(noised), 1e-5, &what));
        }
    }
    eprintln!("img2img vs diffusers: noised latents max abs error {error:.2e}; {refused} cases where diffusers runs 0 steps");
    assert!(
        refused > 0,
        "the golden file covers the minimum of one step"
    );
}

/// The tiny UNet's weights, a function of each tensor's name and shape: make_golden.py
/// `named_weights`, value for value (splitmix64 of FNV-1a(name) + index, scaled, f16-rounded).
/// Every tensor asked for must be one diffusers' model has, with its shape.
struct NamedWeights {
    manifest: HashMap<String, Vec<usize>>,
    /// Zeros broadcast from a single value instead of the named values: a real-size model
    /// (real-size-layouts.json) is built for its layout only, an SDXL UNet without its 10 GB.
    shapes_only: bool,
}

impl NamedWeights {
    fn new(manifest: HashMap<String, Vec<usize>>) -> Self {
        Self {
            manifest,
            shapes_only: false,
        }
    }

    fn shapes_only(manifest: HashMap<String, Vec<usize>>) -> Self {
        Self {
            manifest,
            shapes_only: true,
        }
    }

    fn values(name: &str, shape: &[usize]) -> Vec<f32> {
        let mut seed: u64 = 0xCBF2_9CE4_8422_2325;
        for byte in name.bytes() {
            seed = (seed ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3);
        }
        let count: usize = shape.iter().product();
        let fan_in: usize = shape.iter().skip(1).product();
        (0..count as u64)
            .map(|i| {
                let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let u = (z >> 11) as f64 * 2f64.powi(-53) * 2.0 - 1.0;
                let v = if shape.len() == 1 {
                    if name.ends_with("weight") {
                        1.0 + 0.1 * u
                    } else {
                        0.05 * u
                    }
                } else {
                    u / (fan_in as f64).sqrt()
                };
                v as f32
            })
            .collect()
    }

    /// Every tensor of the manifest, stored in f16 as diffusers' files hold them (the values
    /// are f16-exact, so nothing is lost).
    fn save(&self, path: &Path) {
        let tensors: HashMap<String, Tensor> = self
            .manifest
            .iter()
            .map(|(name, dims)| {
                let tensor =
                    Tensor::from_vec(Self::values(name, dims), dims.as_slice(), &Device::Cpu)
                        .and_then(|t| t.to_dtype(DType::F16))
                        .expect("named tensor");
                (name.clone(), tensor)
            })
            .collect();
        candle_core::safetensors::save(&tensors, path).expect("weights file written");
    }
}

/// Records the name of every tensor a model reads from `inner`: whether each tensor of
/// diffusers' (or transformers') model is used.
struct Tracking<B> {
    inner: B,
    read: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl<B: candle_nn::var_builder::SimpleBackend> candle_nn::var_builder::SimpleBackend
    for Tracking<B>
{
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.inner.get(shape, name, init, dtype, device)?;
        self.read.lock().unwrap().insert(name.to_string());
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.inner.get_unchecked(name, dtype, device)?;
        self.read.lock().unwrap().insert(name.to_string());
        Ok(tensor)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// `build` reads from `backend` exactly the tensors named `expected` (in any order, at least one).
fn assert_reads_exactly<B: candle_nn::var_builder::SimpleBackend + 'static>(
    what: &str,
    backend: B,
    mut expected: Vec<String>,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<()>,
) {
    expected.sort();
    assert!(!expected.is_empty(), "{what}: nothing to read");
    let read = std::sync::Arc::default();
    let tracking = Tracking {
        inner: backend,
        read: std::sync::Arc::clone(&read),
    };
    build(VarBuilder::from_backend(
        Box::new(tracking),
        DType::F32,
        Device::Cpu,
    ))
    .unwrap_or_else(|e| panic!("{what}: the model builds: {e}"));
    let read: Vec<String> = read.lock().unwrap().iter().cloned().collect();
    assert_eq!(read, expected, "{what}: tensors read vs the reference's");
}

/// The VAE file's tensors the decoder uses (the encoder's are never read).
fn is_vae_decoder_tensor(name: &str) -> bool {
    name.starts_with("decoder.") || name.starts_with("post_quant_conv.")
}

/// Every tensor the reference's model has is read by ours (an unread one would be a part of
/// the model we leave out): the tiny UNets and text encoders by their manifests, the VAE's
/// decoder and the tiny decoder by their files.
#[test]
fn every_tensor_of_the_reference_models_is_read() {
    let golden = golden();
    for kind in ["conv-projection", "linear-projection", "sdxl"] {
        let manifest = manifest(&golden["loop"]["unet_tensors"][kind]);
        let expected = manifest.keys().cloned().collect();
        let (config, added) = tiny_unet(kind);
        assert_reads_exactly(
            &format!("UNet {kind}"),
            NamedWeights::new(manifest),
            expected,
            |vb| UNet::new(vb, 4, &config, added, false).map(drop),
        );
    }
    for (name, activation, projection) in [
        ("quick_gelu", Activation::QuickGelu, None),
        ("gelu", Activation::Gelu, None),
        ("gelu-projection", Activation::Gelu, Some(24)),
    ] {
        let manifest = manifest(&golden["text_encoder"]["weights"][name]);
        let expected = manifest.keys().cloned().collect();
        let config = tiny_text_config(activation, TextOutput::Last, projection);
        assert_reads_exactly(
            &format!("text encoder {name}"),
            NamedWeights::new(manifest),
            expected,
            |vb| TextEncoder::new(vb, &config).map(drop),
        );
    }
    let file_tensors = |file: &str| {
        let tensors = crate::sys::map_safetensors(&folder().join(file)).expect("golden file");
        let names: Vec<String> = tensors
            .tensors()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        (tensors, names)
    };
    let (vae, names) = file_tensors("vae.safetensors");
    let expected = names
        .into_iter()
        .filter(|name| is_vae_decoder_tensor(name))
        .collect();
    assert_reads_exactly("VAE decoder", vae, expected, |vb| {
        VaeDecoder::new(vb, &tiny_vae()).map(drop)
    });
    for file in ["taesd-published.safetensors", "taesd-diffusers.safetensors"] {
        let (taesd, expected) = file_tensors(file);
        assert_reads_exactly(file, taesd, expected, |vb| {
            TinyDecoder::new(vb, 4).map(drop)
        });
    }
}

impl candle_nn::var_builder::SimpleBackend for NamedWeights {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.manifest.get(name) {
            Some(dims) if dims.as_slice() == shape.dims() => {}
            other => candle_core::bail!("{name} {:?}: diffusers has {other:?}", shape.dims()),
        }
        if self.shapes_only {
            return Tensor::zeros((), dtype, device)?.broadcast_as(shape);
        }
        Tensor::from_vec(Self::values(name, shape.dims()), shape, device)?
            .to_dtype(DType::F16)?
            .to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: shape unknown")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.manifest.contains_key(name)
    }
}

/// The tiny UNets of make_golden.py (`UNET_CONFIGS`, `tiny_sdxl_unet`) in our terms: the
/// config and, for SDXL, the added conditioning.
fn tiny_unet(kind: &str) -> (UNet2DConditionModelConfig, Option<AddedConfig>) {
    let block = |out_channels, use_cross_attn, attention_head_dim| BlockConfig {
        out_channels,
        use_cross_attn,
        attention_head_dim,
    };
    let (blocks, cross_attention_dim, linear, added) = match kind {
        "conv-projection" => (
            vec![block(32, Some(1), 2), block(64, None, 4)],
            12,
            false,
            None,
        ),
        "linear-projection" => (
            vec![block(32, Some(1), 2), block(64, None, 4)],
            12,
            true,
            None,
        ),
        "sdxl" => (
            vec![block(32, None, 2), block(64, Some(2), 4)],
            16,
            true,
            // POOLED_XL 12 + 6 time ids x TIME_XL 8.
            Some(AddedConfig {
                time_embed_dim: 8,
                input_dim: 12 + 6 * 8,
            }),
        ),
        other => panic!("unknown tiny UNet {other:?}"),
    };
    let config = UNet2DConditionModelConfig {
        blocks,
        center_input_sample: false,
        cross_attention_dim,
        downsample_padding: 1,
        flip_sin_to_cos: true,
        freq_shift: 0.,
        layers_per_block: 1,
        mid_block_scale_factor: 1.,
        norm_eps: 1e-5,
        norm_num_groups: 32,
        sliced_attention_size: None,
        use_linear_projection: linear,
    };
    (config, added)
}

fn tiny_vae() -> AutoEncoderKLConfig {
    AutoEncoderKLConfig {
        block_out_channels: vec![8, 16],
        layers_per_block: 1,
        latent_channels: 4,
        norm_num_groups: 4,
        use_quant_conv: true,
        use_post_quant_conv: true,
    }
}

/// The preset's own spec with the tiny models in place of the real ones.
fn tiny_spec(preset_name: &str, unet: &str) -> Spec {
    let mut spec = preset::spec(preset(preset_name));
    (spec.unet, spec.added) = tiny_unet(unet);
    spec.vae = tiny_vae();
    spec.clip = None;
    spec.clip2 = None;
    spec
}

#[allow(clippy::too_many_arguments)]
fn generator(
    spec: Spec,
    dtype: DType,
    text: TextConditioning,
    steps: usize,
    guidance: f64,
    scheduler: SchedulerKind,
    denoise: f64,
    tiny: Option<&Path>,
) -> StableDiffusionGenerator {
    let unet = match (spec.added, spec.unet.use_linear_projection) {
        (Some(_), _) => "sdxl",
        (None, true) => "linear-projection",
        (None, false) => "conv-projection",
    };
    // Through a file, as a real model loads: the named weights saved as diffusers stores them.
    let dir = tempfile::tempdir().expect("temporary folder");
    let unet_file = dir.path().join("diffusion_pytorch_model.safetensors");
    NamedWeights::new(manifest(&golden()["loop"]["unet_tensors"][unet])).save(&unet_file);
    let options = SdOptions {
        size: (16, 16),
        steps,
        guidance,
        scheduler,
        denoise,
        themes: vec![Theme {
            positive: "golden".into(),
            negative: String::new(),
            style: None,
            palette: None,
        }],
        rotation_interval: 1,
        resolution_divisor: 1,
        device: Device::Cpu,
        dtype,
        spec,
    };
    StableDiffusionGenerator::from_parts(
        options,
        text,
        &unet_file,
        &folder().join("vae.safetensors"),
        tiny,
    )
    .expect("tiny golden models load")
}

/// Hands out diffusers' recorded draws in order, and counts them.
struct Recorded {
    draws: Vec<Tensor>,
    taken: usize,
}

impl NoiseSource for Recorded {
    fn next(&mut self, shape: (usize, usize, usize, usize)) -> anyhow::Result<Tensor> {
        let draw = self
            .draws
            .get(self.taken)
            .ok_or_else(|| anyhow::anyhow!("more draws than diffusers made"))?;
        assert_eq!(draw.dims4()?, shape, "draw {} shape", self.taken);
        self.taken += 1;
        Ok(draw.clone())
    }
}

#[test]
fn the_whole_unet_loop_matches_the_diffusers_pipelines() {
    let golden = golden();
    let tensors = tensors("loop-golden.safetensors");
    let mut worst = 0.0f64;
    let cases = golden["loop"]["cases"].as_array().expect("loop cases");
    assert!(!cases.is_empty(), "the golden file holds UNet loop cases");
    for strength in [false, true] {
        assert!(
            cases
                .iter()
                .any(|c| c["unet"] == "sdxl" && c["strength"].is_f64() == strength),
            "the golden file holds an SDXL {} case",
            if strength { "img2img" } else { "txt2img" }
        );
    }
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let unet = case["unet"].as_str().unwrap();
        let text = if unet == "sdxl" {
            TextConditioning::Fixed {
                positive: tensors["xl.cond"].clone(),
                negative: tensors["xl.uncond"].clone(),
                pooled: Some((
                    tensors["xl.negative_pooled"].clone(),
                    tensors["xl.pooled"].clone(),
                )),
            }
        } else {
            TextConditioning::Fixed {
                positive: tensors["cond"].clone(),
                negative: tensors["uncond"].clone(),
                pooled: None,
            }
        };
        let strength = case["strength"].as_f64();
        let mut sd = generator(
            tiny_spec(case["preset"].as_str().unwrap(), unet),
            DType::F32,
            text,
            case["steps"].as_u64().unwrap() as usize,
            case["guidance"].as_f64().unwrap(),
            kind(case["kind"].as_str().unwrap()),
            strength.unwrap_or(1.0),
            None,
        );
        let draws = case["noises"].as_u64().unwrap() as usize;
        let mut noise = Recorded {
            draws: (0..draws)
                .map(|k| tensors[&format!("{name}.noise.{k}")].clone())
                .collect(),
            taken: 0,
        };
        let request = KeyframeRequest {
            index: 0,
            seed: 0,
            previous: strength.map(|_| tensors["previous"].squeeze(0).expect("squeeze")),
        };
        let ours = sd
            .keyframe_with_noise(&request, &mut noise)
            .expect("keyframe");
        assert_eq!(noise.taken, draws, "{name}: random draws used");
        let reference = values(&tensors[&format!("{name}.output")]);
        let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let error = max_error(&values(&ours), &reference, name);
        eprintln!("UNet loop {name}: max abs error {error:.2e} (largest value {scale:.2})");
        // The header's 2e-4, of the largest value: a loop's latents grow to ~60 (measured
        // worst 5.4e-5 of it).
        assert!(
            error <= 2e-4 * scale.max(1.0),
            "{name}: max abs error {error:.2e} (largest value {scale:.2})"
        );
        worst = worst.max(error);
    }
    eprintln!("UNet loop vs diffusers: max abs error {worst:.2e}");
}

/// make_golden.py's `odd_unet`: 16 groups, the downsampler's padding 0, three blocks.
fn odd_unet_config() -> UNet2DConditionModelConfig {
    let block = |out_channels, use_cross_attn, attention_head_dim| BlockConfig {
        out_channels,
        use_cross_attn,
        attention_head_dim,
    };
    UNet2DConditionModelConfig {
        blocks: vec![
            block(16, Some(1), 2),
            block(32, None, 4),
            block(32, Some(1), 4),
        ],
        center_input_sample: false,
        cross_attention_dim: 12,
        downsample_padding: 0,
        flip_sin_to_cos: true,
        freq_shift: 0.,
        layers_per_block: 1,
        mid_block_scale_factor: 1.,
        norm_eps: 1e-5,
        norm_num_groups: 16,
        sliced_attention_size: None,
        use_linear_projection: false,
    }
}

/// The odd UNet's weights, named as make_golden.py names them (its prefix first).
fn odd_unet_weights(golden: &Value) -> (NamedWeights, String) {
    let case = &golden["unet_forward"];
    let prefix = case["prefix"].as_str().expect("prefix");
    let manifest = manifest(&case["unet_tensors"])
        .into_iter()
        .map(|(name, dims)| (format!("{prefix}{name}"), dims))
        .collect();
    (
        NamedWeights::new(manifest),
        prefix.trim_end_matches('.').to_string(),
    )
}

/// One forward pass where the loop cases never go: group counts other than 32, the padding-0
/// downsampler, and latents (7x5) the up blocks cannot simply double back to.
#[test]
fn a_unet_forward_off_the_loops_path_matches_diffusers() {
    let golden = golden();
    let tensors = tensors("unet-forward-golden.safetensors");
    let (weights, prefix) = odd_unet_weights(&golden);
    let expected = weights.manifest.keys().cloned().collect();
    assert_reads_exactly("odd UNet", weights, expected, |vb| {
        UNet::new(vb.pp(&prefix), 4, &odd_unet_config(), None, false).map(drop)
    });
    let (weights, prefix) = odd_unet_weights(&golden);
    let vb = VarBuilder::from_backend(Box::new(weights), DType::F32, Device::Cpu).pp(prefix);
    let unet = UNet::new(vb, 4, &odd_unet_config(), None, false).expect("odd UNet");
    let timestep = golden["unet_forward"]["timestep"]
        .as_f64()
        .expect("timestep");
    let ours = unet
        .forward(&tensors["sample"], timestep, &tensors["text"], None)
        .expect("forward");
    let reference = values(&tensors["output"]);
    assert_eq!(ours.dims(), tensors["output"].dims());
    let scale = reference.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let error = assert_close(&values(&ours), &reference, 2e-4, "odd UNet");
    eprintln!("odd UNet forward: max abs error {error:.2e} (largest value {scale:.2})");
}

/// Ours vs the reference u8 picture: at most one level apart, and rarely.
fn assert_pixels(ours: &[u8], reference: &[u8], what: &str) -> usize {
    assert_eq!(ours.len(), reference.len(), "{what}: size");
    let mut off = 0;
    for (i, (&a, &b)) in ours.iter().zip(reference).enumerate() {
        assert!(a.abs_diff(b) <= 1, "{what}[{i}]: ours {a}, diffusers {b}");
        off += usize::from(a != b);
    }
    assert!(
        off * 200 <= ours.len(),
        "{what}: {off} of {} values off by one",
        ours.len()
    );
    off
}

/// A batch of our pictures against the reference's, packed one after another.
fn assert_pictures(pictures: &[Vec<u8>], reference: &[u8], what: &str) -> usize {
    let per_picture = reference.len() / pictures.len();
    let mut off = 0;
    for (i, picture) in pictures.iter().enumerate() {
        off += assert_pixels(
            picture,
            &reference[i * per_picture..(i + 1) * per_picture],
            &format!("{what} picture {i}"),
        );
    }
    off
}

/// A generator used only to decode (its text conditioning is never asked for).
fn decoders_only(spec: Spec, tiny: Option<&Path>) -> StableDiffusionGenerator {
    let zeros = Tensor::zeros((1, 5, 12), DType::F32, &Device::Cpu).expect("zeros");
    let text = TextConditioning::Fixed {
        positive: zeros.clone(),
        negative: zeros,
        pooled: None,
    };
    generator(
        spec,
        DType::F32,
        text,
        1,
        0.0,
        SchedulerKind::Ddim,
        1.0,
        tiny,
    )
}

fn rgb8(t: &Tensor) -> Vec<u8> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<u8>())
        .expect("u8 picture")
}

#[test]
fn vae_decode_matches_diffusers_with_each_presets_scaling_factor() {
    let golden = golden();
    let tensors = tensors("vae-golden.safetensors");
    let file = folder().join("vae.safetensors");
    let weights = || checked_var_builder(&file, DType::F32, &Device::Cpu, "VAE").expect("VAE file");
    let ours = VaeDecoder::new(weights(), &tiny_vae()).expect("tiny VAE");
    // candle-transformers' own VAE, only to show the upstream bug our decoder avoids.
    let upstream = AutoEncoderKL::new(weights(), 3, 3, tiny_vae()).expect("upstream tiny VAE");
    let cases = golden["vae"]["cases"].as_array().expect("vae cases");
    assert!(!cases.is_empty(), "the golden file holds VAE cases");
    for case in cases {
        let name = case["preset"].as_str().unwrap();
        let latents = &tensors[&format!("{name}.latents")];
        let batch = latents.dim(0).unwrap();
        assert!(batch >= 3, "{name}: a batch of at least three");
        let spec = tiny_spec(name, "linear-projection");
        assert_eq!(
            spec.vae_scale,
            case["scaling_factor"].as_f64().unwrap(),
            "{name}: scaling factor"
        );
        // The decoder itself, on latents divided by the preset's factor, the whole batch at once
        // (as diffusers decoded it) and each latent alone.
        let scaled = (latents / spec.vae_scale).unwrap();
        let together = ours.decode(&scaled).expect("decode batch");
        let reference = values(&tensors[&format!("{name}.image")]);
        let error = assert_close(&values(&together), &reference, 2e-4, name);
        for i in 0..batch {
            let alone = ours
                .decode(&scaled.narrow(0, i, 1).unwrap())
                .expect("decode one");
            let in_batch = together.narrow(0, i, 1).unwrap();
            assert_close(
                &values(&alone),
                &values(&in_batch),
                1e-5,
                &format!("{name} image {i} alone vs in the batch"),
            );
        }
        let upstream_error = max_error(
            &values(&upstream.decode(&scaled).expect("upstream decode")),
            &reference,
            "upstream",
        );
        eprintln!(
            "VAE {name}: candle-transformers' AutoEncoderKL on the batch of {batch}: \
             max abs error {upstream_error:.2e} (ours {error:.2e})"
        );
        // Our whole path: scaling, [-1, 1] -> u8, NCHW -> packed RGB, one batch.
        let pictures = decoders_only(spec, None)
            .decode_full(latents)
            .expect("decode_full");
        assert_eq!(pictures.len(), batch, "{name}: one picture per latent");
        let reference = rgb8(&tensors[&format!("{name}.rgb8")]);
        let off = assert_pictures(&pictures, &reference, name);
        eprintln!(
            "VAE decode {name}: max abs error {error:.2e}, {off} of {} u8 values off by one",
            reference.len()
        );
    }
}

#[test]
fn taesd_matches_diffusers_autoencoder_tiny_in_both_published_layouts() {
    let tensors = tensors("taesd-golden.safetensors");
    let latents = &tensors["latents"];
    let reference = &tensors["rgb01"];
    for file in ["taesd-published.safetensors", "taesd-diffusers.safetensors"] {
        let vb = checked_var_builder(
            &folder().join(file),
            DType::F32,
            &Device::Cpu,
            "tiny decoder",
        )
        .expect("tiny decoder file");
        let decoder = TinyDecoder::new(vb, 4).expect("tiny decoder builds");
        let ours = decoder
            .forward(latents)
            .and_then(|x| x.clamp(0.0, 1.0))
            .expect("forward");
        let error = assert_close(&values(&ours), &values(reference), 2e-4, file);
        // And as the pipeline hands it in-between latents: through the generator's decode.
        let mut sd = decoders_only(
            tiny_spec("sd-turbo", "linear-projection"),
            Some(&folder().join(file)),
        );
        let pictures = sd.decode(latents).expect("decode");
        let expected = rgb8(
            &(reference * 255.0)
                .and_then(|x| x.round())
                .and_then(|x| x.to_dtype(DType::U8))
                .and_then(|x| x.permute((0, 2, 3, 1)))
                .and_then(|x| x.contiguous())
                .expect("reference u8"),
        );
        assert_pictures(&pictures, &expected, file);
        eprintln!("TAESD {file}: max abs error {error:.2e}");
    }
}

#[test]
fn token_ids_match_transformers_clip_tokenizer() {
    let golden = golden();
    let cases = golden["tokenizer"]["cases"]
        .as_array()
        .expect("tokenizer cases");
    let mut loaded = HashMap::new();
    for case in cases {
        let pad = case["pad_token"].as_str().unwrap().to_string();
        let tokenizer = loaded.entry(pad.clone()).or_insert_with(|| {
            tokenizer::load(&folder().join("tokenizer"), &pad).expect("tokenizer loads")
        });
        let prompt = case["prompt"].as_str().unwrap();
        let ids = tokenizer::token_ids(tokenizer, &pad, 77, prompt).expect("token ids");
        let expected: Vec<u32> = floats(&case["ids"]).iter().map(|&v| v as u32).collect();
        assert_eq!(ids, expected, "prompt {prompt:?} padded with {pad:?}");
    }
    assert!(cases.len() >= 60, "30+ prompts for each padding token");
}

#[test]
fn a_tokenizer_json_gives_the_same_ids() {
    let golden = golden();
    let from_json = tokenizer::load(&folder().join("tokenizer-json"), tokenizer::END)
        .expect("tokenizer.json loads");
    let mut checked = 0;
    for case in golden["tokenizer"]["cases"]
        .as_array()
        .expect("tokenizer cases")
    {
        if case["pad_token"].as_str() != Some(tokenizer::END) {
            continue;
        }
        let prompt = case["prompt"].as_str().unwrap();
        let ids = tokenizer::token_ids(&from_json, tokenizer::END, 77, prompt).expect("ids");
        let expected: Vec<u32> = floats(&case["ids"]).iter().map(|&v| v as u32).collect();
        assert_eq!(ids, expected, "prompt {prompt:?}");
        checked += 1;
    }
    assert!(checked >= 30);
}

/// make_golden.py's tiny CLIP text models (`text_encoder_golden`) in our terms.
fn tiny_text_config(
    activation: Activation,
    output: TextOutput,
    projection: Option<usize>,
) -> TextConfig {
    TextConfig {
        vocab_size: 49408,
        hidden_size: 32,
        intermediate_size: 64,
        attention_heads: 4,
        layers: 2,
        max_positions: 77,
        activation,
        pad_token: tokenizer::END.into(),
        output,
        projection,
    }
}

/// The UNet manifest's or the text encoder's tensor names and shapes, from golden.json.
fn manifest(value: &Value) -> HashMap<String, Vec<usize>> {
    value
        .as_object()
        .expect("a manifest")
        .iter()
        .map(|(name, dims)| {
            let dims = floats(dims).iter().map(|&d| d as usize).collect();
            (name.clone(), dims)
        })
        .collect()
}

#[test]
fn the_text_encoder_matches_transformers_clip_text_model_for_both_activations() {
    let golden = golden();
    let tensors = tensors("text-encoder-golden.safetensors");
    let ids = tensors["ids"].to_dtype(DType::U32).expect("ids");
    for (name, activation) in [
        ("quick_gelu", Activation::QuickGelu),
        ("gelu", Activation::Gelu),
    ] {
        let manifest = manifest(&golden["text_encoder"]["weights"][name]);
        // last_hidden_state (sd-1.x, sd-2.x) and hidden_states[-2] (SDXL).
        for (output, key) in [
            (TextOutput::Last, "hidden"),
            (TextOutput::Penultimate, "penultimate"),
        ] {
            let config = tiny_text_config(activation, output, None);
            let weights = NamedWeights::new(manifest.clone());
            let vb = VarBuilder::from_backend(Box::new(weights), DType::F32, Device::Cpu);
            let encoder = TextEncoder::new(vb, &config).expect("tiny text encoder");
            let ours = encoder.encode(&ids).expect("encode").hidden;
            let what = format!("{name} {key}");
            let reference = &tensors[&format!("{name}.{key}")];
            let error = assert_close(&values(&ours), &values(reference), 1e-4, &what);
            eprintln!("text encoder {what}: max abs error {error:.2e}");
        }
    }
    // SDXL's second encoder (CLIPTextModelWithProjection): hidden_states[-2] and the pooled,
    // projected text_embeds, on "!"-padded ids.
    let config = tiny_text_config(Activation::Gelu, TextOutput::Penultimate, Some(24));
    let weights = NamedWeights::new(manifest(
        &golden["text_encoder"]["weights"]["gelu-projection"],
    ));
    let vb = VarBuilder::from_backend(Box::new(weights), DType::F32, Device::Cpu);
    let encoder = TextEncoder::new(vb, &config).expect("tiny encoder with projection");
    let ids = tensors["projection.ids"].to_dtype(DType::U32).expect("ids");
    let ours = encoder.encode(&ids).expect("encode");
    for (what, ours, key) in [
        ("penultimate", &ours.hidden, "projection.penultimate"),
        (
            "pooled",
            ours.pooled.as_ref().expect("a pooled output"),
            "projection.pooled",
        ),
    ] {
        let error = assert_close(&values(ours), &values(&tensors[key]), 1e-4, what);
        eprintln!("text encoder with projection, {what}: max abs error {error:.2e}");
    }
}

/// Real-size text encoders with random weights against transformers' `CLIPTextModel`: run by
/// tools/reference/text_encoders.sh (needs the reference venv and ~2 GB), not by CI.
#[test]
#[ignore = "needs tools/reference/text_encoders.sh's real-size files"]
fn text_encoders_at_real_size() {
    use crate::generator::stable_diffusion::weights::build_from;
    let root = PathBuf::from(
        std::env::var("DREAMFRAME_TEXT_REFERENCE").expect("DREAMFRAME_TEXT_REFERENCE: a folder"),
    );
    let encoders = [
        ("sd-1.5", preset::spec(Preset::Sd15).clip),
        ("sd-2.1", preset::spec(Preset::Sd21).clip),
        ("sdxl-1", preset::spec(Preset::SdxlTurbo).clip),
        ("sdxl-2", preset::spec(Preset::SdxlTurbo).clip2),
    ];
    for (name, config) in encoders {
        let dir = root.join(name);
        let config = config.expect("a text encoder");
        let golden = candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu)
            .expect("golden");
        let encoder = build_from(
            &dir.join("text_encoder/model.safetensors"),
            DType::F32,
            &Device::Cpu,
            "text encoder",
            |vb| TextEncoder::new(vb, &config),
        )
        .expect("encoder loads");
        let pad = config.pad_token.clone();
        let tokens = tokenizer::load(&dir.join("tokenizer"), &pad).expect("tokenizer");
        let ids = golden["ids"].to_dtype(DType::U32).unwrap();
        let hidden = &golden["hidden"];
        let prompts = [
            "a lighthouse at dusk, oil painting",
            "",
            "(masterpiece:1.2), surreal dreamlike landscape by René Magritte, 8k",
            "東京の夜景, neon lights reflected in rain",
            &"word ".repeat(100),
        ];
        for (i, prompt) in prompts.iter().enumerate() {
            let expected = ids.get(i).unwrap().to_vec1::<u32>().unwrap();
            let ours_ids = tokenizer::token_ids(&tokens, &pad, 77, prompt).expect("ids");
            assert_eq!(ours_ids, expected, "{name}: ids of prompt {i}");
            let encoded = encoder
                .encode(&ids.get(i).unwrap().unsqueeze(0).unwrap())
                .expect("encode");
            // SDXL's second encoder: the pooled, projected output too.
            if let Some(pooled) = golden.get("pooled") {
                let ours = encoded.pooled.as_ref().expect("a pooled output");
                let reference = pooled.get(i).unwrap().unsqueeze(0).unwrap();
                let error = max_error(&values(ours), &values(&reference), name);
                eprintln!("text encoder {name} prompt {i}: pooled max abs error {error:.2e}");
                assert!(error <= 1e-3, "{name} prompt {i} pooled: {error:.2e}");
            }
            let ours = encoded.hidden;
            let reference = hidden.get(i).unwrap().unsqueeze(0).unwrap();
            let error = max_error(&values(&ours), &values(&reference), name);
            let scale = values(&reference)
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()));
            eprintln!("text encoder {name} prompt {i}: max abs error {error:.2e} (largest value {scale:.2})");
            assert!(
                error <= 1e-3 * scale.max(1.0),
                "{name} prompt {i}: {error:.2e}"
            );
        }
    }
}

/// Every preset's real-size UNet, VAE decoder and text encoders, as our presets configure them,
/// read exactly the tensors (names and shapes) of diffusers' and transformers' models built from
/// the repos' config.json files (make_golden.py `real_size_layouts`): the real layouts checked
/// where no real weights exist, SDXL's added conditioning and pooled projection included.
#[test]
fn every_presets_real_size_models_have_the_reference_layout() {
    let layouts: Value = serde_json::from_str(
        &std::fs::read_to_string(folder().join("real-size-layouts.json")).expect("layouts"),
    )
    .expect("layouts JSON");
    let check = |what: &str,
                 manifest: HashMap<String, Vec<usize>>,
                 keep: &dyn Fn(&str) -> bool,
                 build: &dyn Fn(VarBuilder) -> candle_core::Result<()>| {
        let expected = manifest.keys().filter(|n| keep(n)).cloned().collect();
        assert_reads_exactly(what, NamedWeights::shapes_only(manifest), expected, build);
    };
    let everything = |_: &str| true;
    for preset in [
        Preset::Sd15,
        Preset::Sd21,
        Preset::SdTurbo,
        Preset::SdxlTurbo,
    ] {
        let spec = preset::spec(preset);
        let name = preset.name();
        check(
            &format!("{name} UNet"),
            manifest(&layouts["unet"][name]),
            &everything,
            &|vb| UNet::new(vb, 4, &spec.unet, spec.added, spec.attention_upcast).map(drop),
        );
        check(
            &format!("{name} VAE"),
            manifest(&layouts["vae"]),
            &is_vae_decoder_tensor,
            &|vb| VaeDecoder::new(vb, &spec.vae).map(drop),
        );
        for (folder, config) in [
            ("text_encoder", &spec.clip),
            ("text_encoder_2", &spec.clip2),
        ] {
            let key = format!("{name}/{folder}");
            match config {
                Some(config) => check(
                    &key,
                    manifest(&layouts["text_encoder"][&key]),
                    &everything,
                    &|vb| TextEncoder::new(vb, config).map(drop),
                ),
                None => assert!(layouts["text_encoder"][&key].is_null(), "{key}"),
            }
        }
    }
}

/// An SDXL model whose text conditioning has no pooled embedding stops with an error that says
/// so, instead of running the UNet without its added conditioning (a different picture).
#[test]
fn sdxl_without_a_pooled_embedding_is_an_error_not_another_picture() {
    let zeros = Tensor::zeros((1, 5, 16), DType::F32, &Device::Cpu).expect("zeros");
    let text = TextConditioning::Fixed {
        positive: zeros.clone(),
        negative: zeros,
        pooled: None,
    };
    let mut sd = generator(
        tiny_spec("sdxl-turbo", "sdxl"),
        DType::F32,
        text,
        1,
        0.0,
        SchedulerKind::EulerAncestral,
        1.0,
        None,
    );
    let request = KeyframeRequest {
        index: 0,
        seed: 0,
        previous: None,
    };
    let mut noise = Recorded {
        draws: vec![],
        taken: 0,
    };
    let error = sd
        .keyframe_with_noise(&request, &mut noise)
        .expect_err("no pooled embedding");
    assert!(
        format!("{error:#}").contains("needs a pooled text embedding"),
        "{error:#}"
    );
}
