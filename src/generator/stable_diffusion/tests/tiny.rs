//! Stable Diffusion on tiny random-weight models in the real tensor layout, built here, saved as
//! safetensors in the diffusers folder layout and loaded through the same loader as real weights:
//! txt2img, img2img drift, the full VAE and the tiny decoder, batched decode, the error messages
//! for a missing file, a missing tensor and a wrong shape, and the fallback to the built-in
//! generator. No real weights exist on these machines.

use std::path::{Path, PathBuf};

use crate::config::{Config, ModelKind};
use crate::generator::stable_diffusion::preset::Spec;
use crate::generator::stable_diffusion::scheduler::{Prediction, ScheduleConfig};
use crate::generator::stable_diffusion::taesd::TinyDecoder;
use crate::generator::stable_diffusion::{
    SchedulerKind, SdOptions, StableDiffusionGenerator, TextConditioning, Theme,
};
use crate::generator::{Generator, KeyframeRequest};
use crate::testing::poll_until_async;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModel, UNet2DConditionModelConfig,
};
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};

const CROSS_ATTENTION: usize = 16;

fn tiny_spec(vae_channels: usize) -> Spec {
    Spec {
        name: "tiny".into(),
        unet: UNet2DConditionModelConfig {
            blocks: vec![
                BlockConfig {
                    out_channels: 32,
                    use_cross_attn: Some(1),
                    attention_head_dim: 8,
                },
                BlockConfig {
                    out_channels: 32,
                    use_cross_attn: None,
                    attention_head_dim: 8,
                },
            ],
            center_input_sample: false,
            cross_attention_dim: CROSS_ATTENTION,
            downsample_padding: 1,
            flip_sin_to_cos: true,
            freq_shift: 0.,
            layers_per_block: 1,
            mid_block_scale_factor: 1.,
            norm_eps: 1e-5,
            norm_num_groups: 8,
            sliced_attention_size: None,
            use_linear_projection: false,
        },
        added: None,
        vae: AutoEncoderKLConfig {
            block_out_channels: vec![vae_channels; 4],
            layers_per_block: 1,
            latent_channels: 4,
            norm_num_groups: 4,
            use_quant_conv: true,
            use_post_quant_conv: true,
        },
        clip: None,
        clip2: None,
        schedule: ScheduleConfig::stable_diffusion(None, Prediction::Epsilon),
        vae_scale: 0.18215,
        vae_upcast: false,
        attention_upcast: false,
        default_steps: 3,
        default_guidance: 0.0,
        native_size: (64, 48),
        taesd_file: "taesd_decoder.safetensors",
        repo: "example/tiny",
    }
}

/// Builds a model with random weights through `build` and saves it at `path`.
fn save_random(path: &Path, build: impl FnOnce(VarBuilder) -> candle_core::Result<()>) {
    std::fs::create_dir_all(path.parent().expect("file in a folder")).expect("create folder");
    let varmap = VarMap::new();
    build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).expect("tiny model builds");
    reseed(&varmap, path);
    varmap.save(path).expect("save safetensors");
}

/// Makes `varmap`'s random weights the same on every run: candle's CPU generator can't be
/// seeded, and an unlucky draw once gave a tiny decoder that saturates every latent to the same
/// frame. Each tensor is redrawn from a generator seeded by its file and name, with the mean and
/// spread of candle's own initialisation (so norms stay ones, convolutions keep their scale).
fn reseed(varmap: &VarMap, path: &Path) {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().len() as u64)
        .unwrap_or(0);
    for (index, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let values: Vec<f32> = var
            .as_tensor()
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .expect("weights as values");
        let mean = values.iter().sum::<f32>() / values.len().max(1) as f32;
        let spread = (values.iter().map(|v| (v - mean).powi(2)).sum::<f32>()
            / values.len().max(1) as f32)
            .sqrt();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(file * 1_000_003 + index as u64);
        let normal = rand_distr::Normal::new(mean, spread.max(0.0)).expect("a normal law");
        let redrawn: Vec<f32> = (0..values.len()).map(|_| normal.sample(&mut rng)).collect();
        let tensor = Tensor::from_vec(redrawn, var.as_tensor().shape(), &Device::Cpu)
            .expect("redrawn weights");
        var.set(&tensor).expect("same shape");
    }
}

/// A weights folder in the diffusers layout with tiny random models.
fn weights_folder(dir: &Path, spec: &Spec) -> (PathBuf, PathBuf, PathBuf) {
    let unet = dir.join("unet/diffusion_pytorch_model.safetensors");
    let vae = dir.join("vae/diffusion_pytorch_model.safetensors");
    let taesd = dir.join("taesd_decoder.safetensors");
    save_random(&unet, |vb| {
        UNet2DConditionModel::new(vb, 4, 4, false, spec.unet.clone()).map(drop)
    });
    save_random(&vae, |vb| {
        AutoEncoderKL::new(vb, 3, 3, spec.vae.clone()).map(drop)
    });
    save_random(&taesd, |vb| TinyDecoder::new(vb, 4).map(drop));
    (unet, vae, taesd)
}

/// A quick pipeline for the tiny model: 20 fps, 6 frames a transition, files to `dir`/out.
fn pipeline_config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.display.fps = 20.0;
    config.display.realtime = false;
    config.buffer.start_seconds = 0.2;
    config.interpolation.frames_per_transition = 6;
    config.decode.batch_size = 2;
    config.output.dir = Some(dir.join("out"));
    config.output.snapshot_interval = None;
    config
}

fn options(spec: Spec, guidance: f64) -> SdOptions {
    SdOptions {
        size: spec.native_size,
        steps: spec.default_steps,
        guidance,
        scheduler: SchedulerKind::Ddim,
        denoise: 0.5,
        themes: vec![Theme {
            positive: "a".into(),
            negative: "b".into(),
            style: None,
            palette: None,
        }],
        rotation_interval: 4,
        resolution_divisor: 1,
        device: Device::Cpu,
        dtype: DType::F32,
        spec,
    }
}

fn embedding() -> TextConditioning {
    let values: Vec<f32> = (0..8 * CROSS_ATTENTION)
        .map(|i| ((i * 37 % 17) as f32 / 8.0) - 1.0)
        .collect();
    let positive =
        Tensor::from_vec(values, (1, 8, CROSS_ATTENTION), &Device::Cpu).expect("embedding");
    TextConditioning::Fixed {
        negative: positive.zeros_like().expect("zeros"),
        positive,
        pooled: None,
    }
}

fn generator(dir: &Path, guidance: f64, tiny: bool) -> StableDiffusionGenerator {
    let spec = tiny_spec(8);
    let (unet, vae, taesd) = weights_folder(dir, &spec);
    StableDiffusionGenerator::from_parts(
        options(spec, guidance),
        embedding(),
        &unet,
        &vae,
        tiny.then_some(taesd.as_path()),
    )
    .expect("tiny model loads")
}

fn request(index: u64, seed: u64, previous: Option<Tensor>) -> KeyframeRequest {
    KeyframeRequest {
        index,
        seed,
        previous,
    }
}

/// How long a run of the tiny model on this machine's CPUs may take: a bound only.
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("values")
}

fn distance(a: &Tensor, b: &Tensor) -> f32 {
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f32>()
        .sqrt()
}

#[test]
fn txt2img_then_img2img_drift_deterministically() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sd = generator(dir.path(), 0.0, false);
    let first = sd
        .keyframes(&[request(0, 11, None)])
        .expect("txt2img")
        .remove(0);
    assert_eq!(first.dims(), &[4, 6, 8], "latent of a 64x48 image");
    assert!(values(&first).iter().all(|v| v.is_finite()));
    let again = sd
        .keyframes(&[request(0, 11, None)])
        .expect("txt2img")
        .remove(0);
    assert_eq!(values(&first), values(&again), "same seed, same keyframe");
    let other = sd
        .keyframes(&[request(0, 12, None)])
        .expect("txt2img")
        .remove(0);
    assert_ne!(values(&first), values(&other));

    let drifted = sd
        .keyframes(&[request(1, 13, Some(first.clone()))])
        .expect("img2img")
        .remove(0);
    assert_eq!(drifted.dims(), first.dims());
    // img2img from the previous keyframe stays nearer to it than a fresh txt2img does.
    let fresh = sd
        .keyframes(&[request(1, 13, None)])
        .expect("txt2img")
        .remove(0);
    assert!(
        distance(&drifted, &first) < distance(&fresh, &first),
        "img2img {} vs txt2img {}",
        distance(&drifted, &first),
        distance(&fresh, &first)
    );
}

#[test]
fn guidance_runs_the_unconditional_and_conditional_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sd = generator(dir.path(), 7.5, false);
    let latent = sd
        .keyframes(&[request(0, 3, None)])
        .expect("txt2img with guidance")
        .remove(0);
    assert_eq!(latent.dims(), &[4, 6, 8]);
}

#[test]
fn keyframes_decode_through_the_vae_and_batches_through_the_tiny_decoder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sd = generator(dir.path(), 0.0, true);
    assert_eq!(sd.resolution(), (64, 48));
    let keys = sd
        .keyframes(&[request(0, 1, None), request(1, 2, None)])
        .expect("two keyframes");
    let key_image = sd
        .decode_keyframe(&keys[0].unsqueeze(0).unwrap())
        .expect("vae decode");
    assert_eq!(key_image.len(), 1);
    assert_eq!(key_image[0].len(), 64 * 48 * 3);
    let batch = crate::generator::interpolation::transition(
        &keys[0],
        &keys[1],
        4,
        crate::config::Easing::Linear,
    )
    .unwrap();
    let frames = sd
        .decode(&batch.narrow(0, 1, 3).unwrap())
        .expect("tiny decode of a batch");
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| f.len() == 64 * 48 * 3));
    assert_ne!(frames[0], frames[2], "different latents, different frames");
}

#[test]
fn resolution_divisor_shrinks_decoded_frames() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(8);
    let (unet, vae, _) = weights_folder(dir.path(), &spec);
    let mut opts = options(spec, 0.0);
    opts.size = (64, 32);
    opts.resolution_divisor = 2;
    let mut sd =
        StableDiffusionGenerator::from_parts(opts, embedding(), &unet, &vae, None).expect("loads");
    assert_eq!(sd.resolution(), (32, 16));
    let key = sd.keyframes(&[request(0, 1, None)]).unwrap().remove(0);
    let frames = sd.decode(&key.unsqueeze(0).unwrap()).unwrap();
    assert_eq!(frames[0].len(), 32 * 16 * 3);
}

#[test]
fn a_missing_file_names_what_was_expected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(8);
    let error = StableDiffusionGenerator::load(dir.path(), options(spec, 0.0), false, false)
        .err()
        .expect("nothing there");
    let text = format!("{error:#}");
    assert!(text.contains("missing tiny UNet"), "{text}");
    assert!(
        text.contains("unet/diffusion_pytorch_model.safetensors"),
        "{text}"
    );
}

/// A weights file that is a FIFO (or a folder) where a file belongs is named as what it is, not
/// called missing, and nothing waits on it.
#[test]
fn a_fifo_or_folder_in_a_files_place_is_named_as_such() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unet = dir.path().join("unet");
    std::fs::create_dir(&unet).expect("unet folder");
    let fifo = unet.join("diffusion_pytorch_model.safetensors");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    std::fs::create_dir(unet.join("diffusion_pytorch_model.fp16.safetensors")).expect("folder");
    let error =
        StableDiffusionGenerator::load(dir.path(), options(tiny_spec(8), 0.0), false, false)
            .err()
            .expect("a FIFO is no UNet");
    let text = format!("{error:#}");
    assert!(
        text.contains("unet/diffusion_pytorch_model.safetensors is a FIFO, not a regular file"),
        "{text}"
    );
    assert!(
        text.contains("diffusion_pytorch_model.fp16.safetensors is a folder, not a regular file"),
        "{text}"
    );
}

/// A single-file checkpoint (what most model sites offer) is named as such, with what to
/// download instead, whether weights-dir is the file or a folder holding it.
#[test]
fn a_single_file_checkpoint_says_to_download_the_diffusers_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("sd_turbo.safetensors");
    std::fs::write(&file, b"not read").expect("write");
    for weights in [file.clone(), dir.path().to_path_buf()] {
        let error =
            StableDiffusionGenerator::load(&weights, options(tiny_spec(8), 0.0), false, false)
                .err()
                .expect("a checkpoint is refused");
        let text = format!("{error:#}");
        assert!(
            text.contains("sd_turbo.safetensors is a single-file checkpoint"),
            "{text}"
        );
        assert!(text.contains("download example/tiny"), "{text}");
    }
}

#[test]
fn a_wrong_shape_or_missing_tensor_names_file_tensor_and_shape() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (unet, vae, _) = weights_folder(dir.path(), &tiny_spec(16)); // a VAE twice as wide
    let error = StableDiffusionGenerator::from_parts(
        options(tiny_spec(8), 0.0),
        embedding(),
        &unet,
        &vae,
        None,
    )
    .err()
    .expect("shape mismatch");
    let text = format!("{error:#}");
    assert!(text.contains(&vae.display().to_string()), "{text}");
    assert!(
        text.contains("has shape [16,") && text.contains("expected [8,"),
        "{text}"
    );

    let partial = dir.path().join("partial.safetensors");
    let conv = Tensor::zeros((8, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("something.else".to_string(), conv)]),
        &partial,
    )
    .unwrap();
    let error = StableDiffusionGenerator::from_parts(
        options(tiny_spec(8), 0.0),
        embedding(),
        &unet,
        &partial,
        None,
    )
    .err()
    .expect("missing tensors");
    let text = format!("{error:#}");
    assert!(
        text.contains("partial.safetensors: missing tensor") && text.contains("(expected shape ["),
        "{text}"
    );
}

#[test]
fn an_unloadable_model_falls_back_to_the_built_in_generator_and_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "[model]\nkind = \"stable-diffusion\"\nweights-dir = \"{}\"\n[output]\ndir = \"{}\"\n",
        dir.path().join("no-such-model").display(),
        dir.path().display()
    );
    let config = Config::from_str(&text, "fallback.toml").expect("valid config");
    assert_eq!(config.model.kind, ModelKind::StableDiffusion);
    let mut generator = crate::generator::build(&config, 1).expect("falls back");
    // The built-in generator shows at once while the model loads; the load fails (no such
    // folder) and the built-in one stays, saying why, from the keyframe after.
    assert_eq!(generator.name(), "cppn");
    let stand_in = || {
        generator
            .stand_in()
            .expect("the built-in generator stands in")
    };
    assert_eq!(stand_in().settled_name, "stable-diffusion/sd-turbo/cpu");
    let started = std::time::Instant::now();
    while generator.stand_in().expect("stands in").warming_up {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "load never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
        generator
            .keyframes(&[request(0, 1, None)])
            .expect("built-in keyframe");
    }
    assert_eq!(generator.name(), "cppn");
    let stand_in = generator.stand_in().expect("stands in");
    assert_eq!(stand_in.settled_name, "cppn");
    let note = stand_in.note.expect("the fallback is noted");
    assert!(
        note.contains("fallback to cppn") && note.contains("no-such-model"),
        "{note}"
    );

    let strict = Config::from_str(&format!("{text}\n"), "strict.toml").map(|mut c| {
        c.model.fallback = crate::config::Fallback::None;
        c
    });
    let error = crate::generator::build(&strict.unwrap(), 1)
        .err()
        .expect("no fallback");
    assert!(format!("{error:#}").contains("model.fallback = \"none\""));
}

#[test]
fn cuda_without_a_cuda_build_is_an_error_not_a_silent_cpu_run() {
    if cfg!(feature = "cuda") {
        return; // a CUDA build may really open the device
    }
    let error =
        crate::generator::stable_diffusion::compute_device(crate::config::ComputeDevice::Cuda(0))
            .expect_err("no CUDA in this build");
    assert!(
        format!("{error:#}").contains("--features cuda"),
        "{error:#}"
    );
}

#[test]
fn the_pipeline_runs_on_a_tiny_stable_diffusion_model() {
    use crate::frame::pixel_format::PixelFormat;
    use crate::frame::Geometry;
    use crate::sink::memory::MemorySink;
    let dir = tempfile::tempdir().expect("temp dir");
    let sd = generator(dir.path(), 0.0, true);
    let config = pipeline_config(dir.path());
    let (sink, recording) = MemorySink::new(Geometry::packed(32, 24, PixelFormat::RGB565));
    // Runs until status.json says a whole transition was decoded and the next keyframe made, and
    // the screen changed 7 times, however long that takes on this machine; bounded so that a
    // stuck pipeline fails. (Presented changes alone prove nothing about decoding: playback
    // blends between decoded frames when they come slower than the screen.)
    let watched = std::sync::Arc::clone(&recording);
    let status_path = dir.path().join("out").join("status.json");
    let enough_shown = async move {
        poll_until_async("the run to have done its part", RUN_LIMIT, || {
            let changes = {
                let recording = watched.lock().expect("recording lock");
                recording
                    .frames
                    .windows(2)
                    .filter(|w| w[0].pixels != w[1].pixels)
                    .count()
            };
            changes >= 7
                && crate::testing::status_json(&status_path).is_some_and(|s| {
                    s["keyframes"].as_u64() >= Some(2) && s["decoded_frames"].as_u64() >= Some(6)
                })
        })
        .await
    };
    let status = crate::testing::run_until(config, Box::new(sink), Box::new(sd), enough_shown)
        .expect("run succeeds");
    assert!(
        status.generator.starts_with("stable-diffusion/tiny/cpu"),
        "{status:?}"
    );
    assert!(
        status.keyframes >= 2 && status.decoded_frames >= 6,
        "{status:?}"
    );
    // Keyframes take the model lock; decoding has the decoders' own (split off at start).
    assert_eq!(status.decoder_lock, "own", "{status:?}");
    assert!(status.model_lock_acquisitions >= 2, "{status:?}");
    let recording = recording.lock().unwrap();
    assert!(
        recording.frames.len() >= 5,
        "{} frames presented",
        recording.frames.len()
    );
}

#[test]
fn themes_rotate_every_rotation_interval_keyframes_and_are_labelled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(8);
    let (unet, vae, _) = weights_folder(dir.path(), &spec);
    let mut opts = options(spec, 0.0);
    opts.themes.push(Theme {
        positive: "second \"theme\"".into(),
        negative: String::new(),
        style: None,
        palette: None,
    });
    opts.rotation_interval = 4;
    let sd =
        StableDiffusionGenerator::from_parts(opts, embedding(), &unet, &vae, None).expect("loads");
    let label = |sd: &StableDiffusionGenerator, index| {
        sd.keyframe_label(index)
            .map(|(theme, prompt)| (theme, prompt.to_string()))
    };
    assert_eq!(label(&sd, 3), Some((0, "a".to_string())));
    assert_eq!(label(&sd, 4), Some((1, "second \"theme\"".to_string())));
    assert_eq!(label(&sd, 8), Some((0, "a".to_string())));

    // A re-anchor moves on to the next theme at once, and the rotation goes on from there.
    let mut sd = sd;
    sd.next_theme();
    assert_eq!(label(&sd, 3), Some((1, "second \"theme\"".to_string())));
    assert_eq!(label(&sd, 4), Some((0, "a".to_string())));
    sd.next_theme();

    // A reload's themes take over without reloading the model.
    sd.reconfigure(&crate::config::PromptsConfig {
        rotation_interval: 2,
        themes: vec![
            Theme {
                positive: "x".into(),
                negative: String::new(),
                style: None,
                palette: None,
            },
            Theme {
                positive: "reloaded".into(),
                negative: String::new(),
                style: None,
                palette: None,
            },
        ],
    });
    assert_eq!(label(&sd, 2), Some((1, "reloaded".to_string())));
}

/// The README's download commands fetch exactly what the loader looks for: each command's files
/// are made (empty) in a temporary folder and every preset's files are then found there.
#[test]
fn the_readme_download_commands_give_the_layout_the_loader_expects() {
    use crate::config::Preset;
    use crate::generator::stable_diffusion::preset;
    use crate::generator::stable_diffusion::weights::WeightFiles;
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let root = tempfile::tempdir().expect("temp dir");
    let mut folders = Vec::new();
    for line in readme
        .lines()
        .filter(|l| l.starts_with("huggingface-cli download "))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| *w == "--local-dir")
            .expect("--local-dir");
        let dir = words[at + 1]
            .strip_prefix("/var/lib/dreamframe/models/")
            .expect("the README's models folder");
        let dir = root.path().join(dir);
        for file in &words[3..at] {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().expect("a folder")).expect("create folder");
            std::fs::write(&path, b"").expect("create file");
        }
        folders.push(dir);
    }
    let presets = [
        ("sd-turbo", Preset::SdTurbo, Some("taesd")),
        ("sd-1.5", Preset::Sd15, None),
        ("sd-2.1", Preset::Sd21, None),
        ("sdxl-turbo", Preset::SdxlTurbo, Some("taesdxl")),
    ];
    for (name, preset, tiny) in presets {
        let dir = root.path().join(name);
        assert!(folders.contains(&dir), "the README downloads {name}");
        let spec = preset::spec(preset);
        let files = WeightFiles::locate(&dir, &spec, true, tiny.is_some())
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(files
            .unet
            .ends_with("unet/diffusion_pytorch_model.fp16.safetensors"));
        assert_eq!(
            files.text.len(),
            if preset == Preset::SdxlTurbo { 2 } else { 1 }
        );
        if let Some(folder) = tiny {
            let taesd = files.tiny_decoder.expect("tiny decoder found");
            assert!(
                taesd.ends_with(format!("{folder}/diffusion_pytorch_model.safetensors")),
                "{taesd:?}"
            );
        }
    }
}

/// A saved Stable Diffusion walk survives the hand-over: resume.json is left alone while the
/// built-in generator stands in, and the model's first keyframe continues the saved walk.
#[test]
fn a_saved_walk_continues_after_the_hand_over_and_is_not_overwritten_meanwhile() {
    use crate::frame::pixel_format::PixelFormat;
    use crate::frame::Geometry;
    use crate::generator::builtin::cppn::CppnGenerator;
    use crate::generator::handover::Handover;
    use crate::resume::ResumeState;
    use crate::sink::memory::MemorySink;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    const SAVED_AT: u64 = 1000;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sd = generator(dir.path(), 0.0, true);
    let config = pipeline_config(dir.path());
    let saved = dir.path().join("out").join(crate::resume::FILE_NAME);
    std::fs::create_dir_all(saved.parent().unwrap()).unwrap();
    let latent = sd.keyframes(&[request(0, 1, None)]).unwrap().remove(0);
    ResumeState::capture(sd.name(), 9, SAVED_AT, &latent)
        .and_then(|state| state.save(&saved))
        .expect("saved walk");
    let cppn = || CppnGenerator::new(&config.cppn, 16, 16, 3, 0.45, Device::Cpu).unwrap();
    let interim_ran = Arc::new(AtomicBool::new(false));
    let untouched = Arc::new(AtomicBool::new(true));
    let handover = {
        let (interim_ran, untouched, saved) = (
            Arc::clone(&interim_ran),
            Arc::clone(&untouched),
            saved.clone(),
        );
        let name = sd.name().to_string();
        Handover::start(
            cppn(),
            cppn(),
            sd.resolution(),
            "stable-diffusion",
            name,
            move || {
                // Loads only once the interim walk has made more than SAVE_EVERY keyframes, and
                // checks the saved walk is still the one saved.
                while !interim_ran.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let state = ResumeState::load(&saved).unwrap().expect("still there");
                untouched.store(state.next_index == SAVED_AT, Ordering::Relaxed);
                Ok(Box::new(sd) as Box<dyn Generator>)
            },
        )
        .unwrap()
    };
    let (sink, _recording) = MemorySink::new(Geometry::packed(32, 24, PixelFormat::RGB565));
    let status_path = dir.path().join("out").join("status.json");
    let script = {
        let saved = saved.clone();
        async move {
            poll_until_async("the run to have done its part", RUN_LIMIT, || {
                if let Some(status) = crate::testing::status_json(&status_path) {
                    if status["keyframes"].as_u64() > Some(2 * crate::resume::SAVE_EVERY) {
                        interim_ran.store(true, Ordering::Relaxed);
                    }
                }
                ResumeState::load(&saved)
                    .ok()
                    .flatten()
                    .is_some_and(|state| state.next_index > SAVED_AT)
            })
            .await
        }
    };
    let mut config = config;
    config.output.status_interval = Duration::from_millis(100);
    crate::testing::run_until(config, Box::new(sink), Box::new(handover), script)
        .expect("run succeeds");
    assert!(
        untouched.load(Ordering::Relaxed),
        "the interim walk overwrote resume.json"
    );
    let state = ResumeState::load(&saved).unwrap().expect("saved walk");
    assert!(
        state.next_index > SAVED_AT,
        "not continued: {}",
        state.next_index
    );
    assert!(
        state.generator.starts_with("stable-diffusion/tiny"),
        "{}",
        state.generator
    );
}

/// Art from the first second: the built-in generator shows while a (slow-loading) model loads,
/// then the model takes over through a cross-fade; status.json says which is on screen.
#[test]
fn the_built_in_generator_shows_while_a_slow_model_loads_then_hands_over() {
    use crate::frame::pixel_format::PixelFormat;
    use crate::frame::Geometry;
    use crate::generator::builtin::cppn::CppnGenerator;
    use crate::generator::handover::Handover;
    use crate::sink::memory::MemorySink;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("temp dir");
    let sd = generator(dir.path(), 0.0, true);
    let frame_size = sd.resolution();
    let mut config = pipeline_config(dir.path());
    let cppn = || {
        CppnGenerator::new(&config.cppn, 16, 16, 3, 0.45, Device::Cpu).expect("built-in generator")
    };
    // The model "loads" until the test has seen the built-in art on screen and status.json
    // saying so.
    let built_in_shown = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ready_at = Arc::new(Mutex::new(None::<Instant>));
    let handover = {
        let built_in_shown = Arc::clone(&built_in_shown);
        let ready_at = Arc::clone(&ready_at);
        Handover::start(
            cppn(),
            cppn(),
            frame_size,
            "stable-diffusion",
            sd.name().to_string(),
            move || {
                while !built_in_shown.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                *ready_at.lock().unwrap() = Some(Instant::now());
                Ok(Box::new(sd) as Box<dyn Generator>)
            },
        )
        .expect("hand-over starts")
    };
    let (sink, recording) = MemorySink::new(Geometry::packed(32, 24, PixelFormat::RGB565));
    let status_path = dir.path().join("out").join("status.json");
    let watched = Arc::clone(&recording);
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let script = {
        let seen = Arc::clone(&seen);
        async move {
            poll_until_async("the run to have done its part", RUN_LIMIT, || {
                let Some(status) = crate::testing::status_json(&status_path) else {
                    return false;
                };
                let on_screen = status["generator"].as_str().unwrap_or_default().to_string();
                let mut seen = seen.lock().unwrap();
                if seen.last() != Some(&on_screen) {
                    seen.push(on_screen.clone());
                }
                if on_screen == "cppn" && !watched.lock().unwrap().frames.is_empty() {
                    built_in_shown.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                on_screen.starts_with("stable-diffusion")
            })
            .await
        }
    };
    config.output.status_interval = Duration::from_millis(100);
    let status = crate::testing::run_until(config, Box::new(sink), Box::new(handover), script)
        .expect("run succeeds");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.first().map(String::as_str), Some("cppn"), "{seen:?}");
    assert!(
        status.generator.starts_with("stable-diffusion/tiny/cpu"),
        "{status:?} after {seen:?}"
    );
    assert_eq!(status.generator_loading, None);
    assert_eq!(status.decoder_lock, "own", "{status:?}");
    let ready_at = ready_at.lock().unwrap().expect("the model loaded");
    let recording = recording.lock().unwrap();
    // Art was on screen before the model was ready, and kept coming: never a black frame.
    assert!(
        recording.frames[0].at < ready_at,
        "first frame after the model"
    );
    for (index, frame) in recording.frames.iter().enumerate() {
        assert!(
            frame.pixels.iter().any(|&b| b != 0),
            "frame {index} is black"
        );
    }
}

/// A preset whose VAE overflows f16 (SDXL's, `vae_upcast`) decodes in f32 even in an f16 model,
/// as diffusers' pipelines upcast it; the tiny decoder and the UNet stay in the model's dtype.
#[test]
fn an_upcast_vae_decodes_in_f32_inside_an_f16_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    for upcast in [false, true] {
        let mut spec = tiny_spec(8);
        spec.vae_upcast = upcast;
        let (unet, vae, taesd) = weights_folder(dir.path(), &spec);
        let mut opts = options(spec, 0.0);
        opts.dtype = DType::F16;
        let sd = StableDiffusionGenerator::from_parts(opts, embedding(), &unet, &vae, Some(&taesd))
            .expect("tiny f16 model loads");
        let decoders = sd.decoders().expect("decoders");
        let expected = if upcast { DType::F32 } else { DType::F16 };
        assert_eq!(decoders.vae_dtype, expected, "upcast {upcast}");
        assert_eq!(decoders.dtype, DType::F16);
        let latents = Tensor::randn(0f32, 1.0, (2, 4, 6, 8), &Device::Cpu).expect("latents");
        let pictures = decoders.decode_full(&latents).expect("full VAE decodes");
        assert_eq!(pictures.len(), 2);
        let images = decoders.decoded_images(&latents, false).expect("images");
        assert!(
            images
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("values")
                .iter()
                .all(|v| v.is_finite()),
            "finite pictures"
        );
    }
}
