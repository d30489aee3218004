"""Writes the golden files under tests/data/sd-reference/ that the Rust tests compare against.

The reference is diffusers and transformers themselves (PyTorch on the CPU), driven the way a
user's pipeline drives them: schedulers built with `from_config` from each model repo's
scheduler_config.json, StableDiffusionPipeline / StableDiffusionImg2ImgPipeline run unchanged
on tiny models with random weights from a fixed seed, the slow CLIPTokenizer that diffusers
loads. Where the pipelines draw random numbers (initial noise, img2img noise, Euler ancestral's
per-step noise) the draws are recorded, so the Rust side can be fed the very same noise.

Run it with `tools/reference/regenerate.sh` (builds the venv first). Deterministic: running it
twice writes identical files.
"""

import gzip
import importlib.util
import json
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "..", "tests", "data", "sd-reference")
OUT = os.path.abspath(OUT)
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(2)

# ---------------------------------------------------------------------------------------------
# The model repos' scheduler_config.json, as published (runwayml/stable-diffusion-v1-5,
# stabilityai/stable-diffusion-2-1, stabilityai/sd-turbo, stabilityai/sdxl-turbo). Copied by hand:
# the hub is not reachable from here.
COMMON = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
              num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False,
              skip_prk_steps=True, steps_offset=1, trained_betas=None)
TURBO = dict(COMMON, prediction_type="epsilon", interpolation_type="linear",
             sample_max_value=1.0, timestep_spacing="trailing", use_karras_sigmas=False)
REPO_SCHEDULERS = {
    "sd-1.5": dict(COMMON, _class_name="PNDMScheduler"),
    "sd-2.1": dict(COMMON, _class_name="DDIMScheduler", prediction_type="v_prediction"),
    "sd-turbo": dict(TURBO, _class_name="EulerDiscreteScheduler"),
    "sdxl-turbo": dict(TURBO, _class_name="EulerAncestralDiscreteScheduler"),
}
# vae/config.json scaling_factor per repo.
VAE_SCALE = {"sd-1.5": 0.18215, "sd-2.1": 0.18215, "sd-turbo": 0.18215, "sdxl-turbo": 0.13025}
DEFAULT_STEPS = {"sd-1.5": 20, "sd-2.1": 20, "sd-turbo": 2, "sdxl-turbo": 2}
KINDS = {"ddim": DDIMScheduler, "euler-ancestral": EulerAncestralDiscreteScheduler}


def scheduler(preset, kind):
    return KINDS[kind].from_config(REPO_SCHEDULERS[preset])


def floats(t):
    """f32 values, written with the 9 digits that round-trip an f32."""
    return [float(f"{v:.9g}") for v in t.detach().float().flatten().tolist()]


class NoiseFeed:
    """Stands in for diffusers' randn_tensor: hands out recorded draws in order."""

    def __init__(self, seed):
        self.generator = torch.Generator().manual_seed(seed)
        self.drawn = []

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        noise = torch.randn(tuple(shape), generator=self.generator, dtype=torch.float32)
        self.drawn.append(noise.clone())
        return noise.to(dtype or torch.float32)


def patch_randn(feed):
    """Every place the pipelines and schedulers used here draw noise."""
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion as t2i
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img as i2i
    import diffusers.schedulers.scheduling_ddim as ddim
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as ea
    import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl as xl_t2i
    import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img as xl_i2i
    for module in (t2i, i2i, ddim, ea, xl_t2i, xl_i2i):
        assert hasattr(module, "randn_tensor"), module.__name__
        module.randn_tensor = feed


# ---------------------------------------------------------------------------------------------
# Schedulers: timesteps, the values behind them, and chained step outputs on small tensors.
def scheduler_golden():
    cases = []
    gen = torch.Generator().manual_seed(1)
    for preset in REPO_SCHEDULERS:
        for kind in KINDS:
            for steps in sorted({1, 2, 3, 4, 20, 50, DEFAULT_STEPS[preset]}):
                s = scheduler(preset, kind)
                s.set_timesteps(steps)
                case = dict(preset=preset, kind=kind, steps=steps,
                            timesteps=floats(s.timesteps),
                            init_noise_sigma=float(s.init_noise_sigma),
                            prediction_type=s.config.prediction_type,
                            timestep_spacing=s.config.timestep_spacing)
                if kind == "ddim":
                    case["alphas_cumprod"] = [float(s.alphas_cumprod[t]) for t in s.timesteps]
                else:
                    case["sigmas"] = floats(s.sigmas)
                if steps > 4:
                    cases.append(case)  # the values above only: chained steps are checked below
                    continue
                sample = torch.randn((1, 4, 2, 3), generator=gen)
                case["sample"] = floats(sample)
                case["shape"] = list(sample.shape)
                case["model_outputs"], case["noises"] = [], []
                case["scaled_inputs"], case["prev_samples"] = [], []
                for t in s.timesteps:
                    feed = NoiseFeed(int(t) + steps)
                    patch_randn(feed)
                    model_output = torch.randn(sample.shape, generator=gen)
                    case["scaled_inputs"].append(floats(s.scale_model_input(sample, t)))
                    sample = s.step(model_output, t, sample).prev_sample
                    case["model_outputs"].append(floats(model_output))
                    case["noises"].append(floats(feed.drawn[0]) if feed.drawn else None)
                    case["prev_samples"].append(floats(sample))
                cases.append(case)
    return cases


# img2img: which timesteps StableDiffusionImg2ImgPipeline runs for a strength, and the noised
# latents it starts from (its own get_timesteps and prepare_latents, on the tiny models below).
def img2img_golden(components):
    cases = []
    gen = torch.Generator().manual_seed(2)
    init = torch.randn((1, 4, 2, 3), generator=gen)
    for preset in REPO_SCHEDULERS:
        for kind in KINDS:
            for steps in sorted({1, 3, 4, 20, DEFAULT_STEPS[preset]}):
                for strength in (0.1, 0.25, 0.5, 0.75, 1.0):
                    pipe = StableDiffusionImg2ImgPipeline(**dict(components, scheduler=scheduler(preset, kind)))
                    pipe.scheduler.set_timesteps(steps)
                    timesteps, n = pipe.get_timesteps(steps, strength, "cpu")
                    case = dict(preset=preset, kind=kind, steps=steps, strength=strength,
                                timesteps=floats(timesteps), runs=int(n) >= 1)
                    if n >= 1 and steps <= 4:
                        feed = NoiseFeed(7)
                        patch_randn(feed)
                        latent_timestep = timesteps[:1]
                        noised = pipe.prepare_latents(init, latent_timestep, 1, 1, torch.float32, "cpu")
                        case["noise"] = floats(feed.drawn[0])
                        case["noised"] = floats(noised)
                    cases.append(case)
    return dict(init=floats(init), shape=list(init.shape), cases=cases)


# ---------------------------------------------------------------------------------------------
# Tiny models in the real diffusers layouts.
UNET_CONFIGS = {
    # use_linear_projection: False as in sd-1.5, True as in sd-2.x.
    "conv-projection": False,
    "linear-projection": True,
}
CROSS_DIM = 12
TOKENS = 5
# SDXL's tiny UNet: both encoders' hidden states side by side (CROSS_DIM_XL wide), the pooled
# projection (POOLED_XL) and six time ids of TIME_XL sinusoids each into add_embedding.
CROSS_DIM_XL = 16
POOLED_XL = 12
TIME_XL = 8


def tiny_unet(linear):
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_DIM, attention_head_dim=(2, 4), norm_num_groups=32,
        use_linear_projection=linear, flip_sin_to_cos=True, freq_shift=0,
    )
    named_weights(unet)
    return unet.eval()


# One UNet forward pass off the loop's beaten path: 16 groups, the downsampler's padding 0
# (diffusers pads right and bottom by one), three blocks, and latents of an odd size, so the up
# blocks upsample to the skips' sizes instead of doubling.
ODD_LATENT = (7, 5)


def odd_unet():
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_DIM, attention_head_dim=(2, 4, 4), norm_num_groups=16,
        downsample_padding=0, use_linear_projection=False, flip_sin_to_cos=True, freq_shift=0,
    )
    named_weights(unet, prefix="odd.")
    return unet.eval()


def unet_forward_golden():
    """The odd UNet's prediction for a batch of two at timestep 601, in float64."""
    unet = odd_unet()
    manifest = {k: list(v.shape) for k, v in unet.state_dict().items()}
    gen = torch.Generator().manual_seed(5)
    sample = torch.randn((2, 4) + ODD_LATENT, generator=gen)
    text = torch.randn((2, TOKENS, CROSS_DIM), generator=gen)
    with torch.no_grad():
        out = unet.double()(sample.double(), 601, encoder_hidden_states=text.double()).sample
    tensors = {"sample": sample, "text": text, "output": out}
    return dict(unet_tensors=manifest, timestep=601, prefix="odd."), tensors


def tiny_sdxl_unet():
    """SDXL's layout in small: a plain first block, cross-attention blocks with more than one
    transformer layer (the mid block takes the last block's count), linear projections, and the
    "text_time" added conditioning."""
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_DIM_XL, attention_head_dim=(2, 4), norm_num_groups=32,
        transformer_layers_per_block=(1, 2), use_linear_projection=True, flip_sin_to_cos=True,
        freq_shift=0, addition_embed_type="text_time", addition_time_embed_dim=TIME_XL,
        projection_class_embeddings_input_dim=POOLED_XL + 6 * TIME_XL,
    )
    named_weights(unet)
    return unet.eval()


def named_weights(model, prefix=""):
    """Weights that are a function of each tensor's name and shape, so the Rust test makes the
    same ones without a weights file (the UNet's would be most of the golden files' size):
    splitmix64 of (FNV-1a of the name + index), uniform in [-1, 1), scaled like `randomize`,
    rounded to f16. src/generator/stable_diffusion/tests/reference.rs `NamedWeights` is the other half."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(named_values(prefix + name, tuple(p.shape))).half().float())


MASK = (1 << 64) - 1


def fnv1a(text):
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def named_values(name, shape):
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a(name)) + np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53 * 2.0 - 1.0
    if len(shape) == 1:
        u = 1.0 + 0.1 * u if name.endswith("weight") else 0.05 * u
    else:
        u = u / math.sqrt(float(np.prod(shape[1:])))
    return u.astype(np.float32).reshape(shape)


def tiny_vae(scale):
    torch.manual_seed(20)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=16, scaling_factor=scale,
    )
    randomize(vae, 21)
    return to_half_precision(vae).eval()


def tiny_taesd():
    torch.manual_seed(30)
    taesd = AutoencoderTiny(
        in_channels=3, out_channels=3, latent_channels=4,
        encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 3, 3, 3), num_decoder_blocks=(3, 3, 3, 1),
        act_fn="relu", upsampling_scaling_factor=2, scaling_factor=1.0,
    )
    randomize(taesd, 31)
    return to_half_precision(taesd).eval()


def randomize(model, seed):
    """Weights of a trained-looking scale (default inits leave e.g. zeroed output convs, which
    would hide whole branches from the comparison)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("weight") and p.dim() == 1:  # norms
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)


def to_half_precision(model):
    """Weights rounded to f16 (and run in f32): the golden files stay small, and both sides
    compute with exactly the values stored."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


def state(model, keep=lambda name: True):
    """The weights as stored: f16 (exact, see to_half_precision)."""
    return {k: v.detach().half().contiguous().clone() for k, v in model.state_dict().items() if keep(k)}


# The UNet loop: whole pipelines, txt2img and img2img, with and without guidance.
LOOP_CASES = [
    # (name, preset, kind, unet, steps, guidance, strength or None)
    ("sd15-ddim-txt2img-cfg", "sd-1.5", "ddim", "conv-projection", 4, 7.5, None),
    ("sd15-ddim-img2img-cfg", "sd-1.5", "ddim", "conv-projection", 4, 7.5, 0.5),
    ("sd15-euler-txt2img-cfg", "sd-1.5", "euler-ancestral", "conv-projection", 3, 5.0, None),
    ("sd21-ddim-txt2img-cfg", "sd-2.1", "ddim", "linear-projection", 3, 7.5, None),
    ("sd21-ddim-img2img-nocfg", "sd-2.1", "ddim", "linear-projection", 4, 0.0, 0.75),
    ("turbo-euler-txt2img", "sd-turbo", "euler-ancestral", "linear-projection", 2, 0.0, None),
    ("turbo-euler-img2img", "sd-turbo", "euler-ancestral", "linear-projection", 2, 0.0, 0.5),
    ("turbo-ddim-img2img", "sd-turbo", "ddim", "linear-projection", 4, 0.0, 0.25),
    ("turbo-euler-img2img-cfg", "sd-turbo", "euler-ancestral", "linear-projection", 4, 3.0, 1.0),
    # StableDiffusionXLPipeline / StableDiffusionXLImg2ImgPipeline, with sdxl-turbo's scheduler.
    ("sdxl-euler-txt2img", "sdxl-turbo", "euler-ancestral", "sdxl", 1, 0.0, None),
    ("sdxl-euler-img2img", "sdxl-turbo", "euler-ancestral", "sdxl", 2, 0.0, 0.5),
    ("sdxl-euler-txt2img-cfg", "sdxl-turbo", "euler-ancestral", "sdxl", 3, 4.0, None),
    ("sdxl-ddim-img2img-cfg", "sdxl-turbo", "ddim", "sdxl", 4, 2.5, 0.75),
]


def loop_golden(unets, vae):
    """In float64, so that only the schedules' f32 constants (diffusers keeps alphas and sigmas
    in f32) separate the two sides, and a tight tolerance still holds."""
    unets = {name: unet.double() for name, unet in unets.items()}
    vae = vae.double()
    tensors, cases = {}, []
    gen = torch.Generator().manual_seed(3)
    cond = torch.randn((1, TOKENS, CROSS_DIM), generator=gen)
    uncond = torch.randn((1, TOKENS, CROSS_DIM), generator=gen)
    previous = torch.randn((1, 4, 8, 8), generator=gen)
    # SDXL's: both encoders' hidden states, and the second's pooled projection, per prompt.
    xl = dict(cond=torch.randn((1, TOKENS, CROSS_DIM_XL), generator=gen),
              uncond=torch.randn((1, TOKENS, CROSS_DIM_XL), generator=gen),
              pooled=torch.randn((1, POOLED_XL), generator=gen),
              negative_pooled=torch.randn((1, POOLED_XL), generator=gen))
    tensors["cond"], tensors["uncond"], tensors["previous"] = cond, uncond, previous
    tensors.update({f"xl.{k}": v for k, v in xl.items()})
    cond, uncond, previous = cond.double(), uncond.double(), previous.double()
    xl = {k: v.double() for k, v in xl.items()}
    for index, (name, preset, kind, unet, steps, guidance, strength) in enumerate(LOOP_CASES):
        sdxl = unet == "sdxl"
        if sdxl:
            components = dict(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                              tokenizer_2=None, unet=unets[unet], scheduler=scheduler(preset, kind),
                              add_watermarker=False)
            args = dict(prompt_embeds=xl["cond"], negative_prompt_embeds=xl["uncond"],
                        pooled_prompt_embeds=xl["pooled"],
                        negative_pooled_prompt_embeds=xl["negative_pooled"])
            txt2img, img2img = StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline
        else:
            components = dict(vae=vae, text_encoder=None, tokenizer=None, unet=unets[unet],
                              scheduler=scheduler(preset, kind), safety_checker=None,
                              feature_extractor=None, requires_safety_checker=False)
            args = dict(prompt_embeds=cond, negative_prompt_embeds=uncond)
            txt2img, img2img = StableDiffusionPipeline, StableDiffusionImg2ImgPipeline
        feed = NoiseFeed(100 + index)
        patch_randn(feed)
        args.update(num_inference_steps=steps, guidance_scale=guidance, output_type="latent")
        with torch.no_grad():
            if strength is None:
                # The initial noise is drawn here and fed in, as a caller passing `latents` does.
                latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(200 + index))
                out = txt2img(**components)(latents=latents.double(), height=16, width=16, **args)
                feed.drawn.insert(0, latents)
            else:
                out = img2img(**components)(image=previous, strength=strength, **args)
        tensors[f"{name}.output"] = out.images
        for k, noise in enumerate(feed.drawn):
            tensors[f"{name}.noise.{k}"] = noise
        cases.append(dict(name=name, preset=preset, kind=kind, unet=unet, steps=steps,
                          guidance=guidance, strength=strength, noises=len(feed.drawn)))
    return cases, tensors


VAE_BATCH = 3


def vae_golden(vae):
    """Latents (the UNet's space) -> the pipeline's own decode and postprocess, per preset scale:
    each case its own batch of VAE_BATCH latents, decoded as one batch (diffusers decodes a
    batch at once, so this also holds our batched decode to it)."""
    from diffusers.image_processor import VaeImageProcessor
    gen = torch.Generator().manual_seed(4)
    tensors, cases = {}, []
    processor = VaeImageProcessor(vae_scale_factor=2)
    for preset, scale in VAE_SCALE.items():
        latents = torch.randn((VAE_BATCH, 4, 8, 8), generator=gen)
        tensors[f"{preset}.latents"] = latents
        vae.register_to_config(scaling_factor=scale)
        with torch.no_grad():
            image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        tensors[f"{preset}.image"] = image
        pil = processor.postprocess(image, output_type="np")  # [0, 1] floats, NHWC
        u8 = torch.from_numpy(np.stack([(p * 255).round().astype("uint8") for p in pil]))
        tensors[f"{preset}.rgb8"] = u8
        cases.append(dict(preset=preset, scaling_factor=scale))
    # encode: the posterior's mean and std, times the scaling factor, for a small image
    image = torch.rand((1, 3, 16, 16), generator=gen) * 2 - 1
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
    tensors["encode.image"], tensors["encode.mean"], tensors["encode.std"] = image, dist.mean, dist.std
    return cases, tensors


def fit_output_range(taesd, latents):
    """Random weights put half the pictures' values outside [0, 1], where the comparison only
    sees the clamp: the last conv is scaled down and its bias centres each channel on 0.5 (in
    the decoder's [0, 1] units) for these latents, so nearly all values are compared unclamped."""
    last = taesd.decoder.layers[-1]
    with torch.no_grad():
        last.weight.mul_(0.3)
        last.bias.zero_()
        image = taesd.decode(latents, return_dict=False)[0]  # 2 * raw - 1
        last.bias.copy_(-image.mean((0, 2, 3)) / 2)
    to_half_precision(taesd)


class PublishedTaesdDecoder(torch.nn.Module):
    """madebyollin/taesd's taesd.py Decoder, as published (nn.Sequential, index = tensor name)."""

    def __init__(self, c):
        super().__init__()
        nn = torch.nn

        def conv(n_in, n_out, **kwargs):
            return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)

        class Clamp(nn.Module):
            def forward(self, x):
                return torch.tanh(x / 3) * 3

        class Block(nn.Module):
            def __init__(self, n_in, n_out):
                super().__init__()
                self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
                self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
                self.fuse = nn.ReLU()

            def forward(self, x):
                return self.fuse(self.conv(x) + self.skip(x))

        self.seq = nn.Sequential(
            Clamp(), conv(4, c), nn.ReLU(),
            Block(c, c), Block(c, c), Block(c, c), nn.Upsample(scale_factor=2), conv(c, c, bias=False),
            Block(c, c), Block(c, c), Block(c, c), nn.Upsample(scale_factor=2), conv(c, c, bias=False),
            Block(c, c), Block(c, c), Block(c, c), nn.Upsample(scale_factor=2), conv(c, c, bias=False),
            Block(c, c), conv(c, 3),
        )

    def forward(self, x):
        return self.seq(x)


def taesd_golden(taesd):
    gen = torch.Generator().manual_seed(5)
    # What the pipeline hands the tiny decoder: UNet-space latents (scaling_factor 1.0), at the
    # size our in-between frames use, including ones beyond the input clamp's knee (|x| ~ 3).
    latents = torch.randn((2, 4, 3, 4), generator=gen) * 2.0
    fit_output_range(taesd, latents)
    with torch.no_grad():
        image = taesd.decode(latents / taesd.config.scaling_factor, return_dict=False)[0]  # [-1, 1]
    clamped = float(((image <= -1) | (image >= 1)).float().mean())
    assert clamped < 0.1, f"{clamped:.1%} of the TAESD golden values would be clamped"
    # The decoder only: the encoder's tensors, present in the real file, are never read.
    diffusers_weights = state(taesd, keep=lambda name: name.startswith("decoder."))
    published = {}
    for k, v in diffusers_weights.items():
        if k.startswith("decoder.layers."):
            index, rest = k[len("decoder.layers."):].split(".", 1)
            published[f"{int(index) + 1}.{rest}"] = v
    check = PublishedTaesdDecoder(8)
    check.seq.load_state_dict({k: v.float() for k, v in published.items()}, strict=True)
    with torch.no_grad():
        again = check(latents)
    assert torch.allclose(again * 2 - 1, image, atol=1e-6), "published layout mapping is wrong"
    return diffusers_weights, published, {"latents": latents, "rgb01": (image / 2 + 0.5).clamp(0, 1)}


# ---------------------------------------------------------------------------------------------
# Tokenizer: the real CLIP vocabulary and merges, from open-clip-torch's BPE file.
def bytes_to_unicode():
    """GPT-2's / CLIP's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab_and_merges():
    bpe_path = os.path.join(os.path.dirname(importlib.util.find_spec("open_clip").origin),
                            "bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in merges[1:49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab)}, merges


PROMPTS = [
    "",
    "a lighthouse at dusk",
    "A Lighthouse At DUSK",
    "an oil painting of a fox, trending on artstation, 8k",
    "(masterpiece:1.2), (best quality), ((ultra detailed)), [blurry]",
    "a cat    with\ttabs\nand newlines",
    "  leading and trailing spaces  ",
    "café crème brûlée, naïve façade",
    "東京の夜景, neon lights",
    "emoji 🌊🔥🦊 sunset",
    "it's, they're, we've, I'm, you'll, he'd",
    "don't stop: won't? can't!",
    "numbers 1234567890 and 3.14159 and 1e-5",
    "under_score snake_case kebab-case CamelCase",
    "<|startoftext|> literal special tokens <|endoftext|>",
    "a \"quoted\" phrase and 'single' quotes",
    "curly quotes \u201chello\u201d and \u2018world\u2019",
    "html &amp; entities &lt;b&gt;",
    "ÀÉÎÕÜ Straße İstanbul",
    "Ωμέγα και άλφα, Привет мир",
    "ﬁne ligatures ﬂower",  # compatibility characters
    "e\u0301 decomposed accent vs \u00e9",
    "zero\u200bwidth space",
    "a photo of an astronaut riding a horse on mars",
    "surreal, dreamlike, by Salvador Dalí and René Magritte",
    "word " * 100,  # long: truncated at 77
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "!!!???...,,,;;;",
    "tab\tonly",
    "mixed 123abc456 tokens",
    "hyphen-ated and slash/separated words",
    ", ".join(["detailed"] * 40),
]


def bpe_applied(word, ranks):
    """CLIP's BPE loop (openai/CLIP simple_tokenizer.bpe), returning the merges it applied."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    applied = []
    while len(parts) > 1:
        pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        applied.append(best)
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return applied


def tokenizer_golden(tmp):
    """transformers' CLIPTokenizer (tokenizers-backed in transformers 5, as diffusers loads it with
    `CLIPTokenizer.from_pretrained(repo, subfolder="tokenizer")`), called as
    StableDiffusionPipeline.encode_prompt calls it."""
    vocab, merges = clip_vocab_and_merges()
    full = os.path.join(tmp, "full")
    os.makedirs(full, exist_ok=True)
    write_tokenizer(full, vocab, merges)
    ranks = {m: i for i, m in enumerate(merges)}
    tokenizer = CLIPTokenizer.from_pretrained(full)
    backend = tokenizer.backend_tokenizer
    # Which merges and tokens the prompts need: the subset keeps them in their real order and
    # with their real ids, so BPE takes the same path (it always applies the best-ranked merge
    # present, and every merge it applies is kept). Checked below: both give the same ids.
    needed = set()
    for prompt in PROMPTS:
        normalized = backend.normalizer.normalize_str(prompt)
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized):
            needed.update(bpe_applied(word, ranks))
    sub_merges = [m for m in merges if m in needed]
    base = list(vocab)[:512]
    keep = set(base) | {"".join(m) for m in sub_merges} | {"<|startoftext|>", "<|endoftext|>"}
    sub_vocab = {t: i for t, i in vocab.items() if t in keep}
    subset = os.path.join(OUT, "tokenizer")
    os.makedirs(subset, exist_ok=True)
    write_tokenizer(subset, sub_vocab, sub_merges)
    # The same subset as one tokenizer.json, the other form a tokenizer folder may hold.
    as_json = os.path.join(OUT, "tokenizer-json")
    os.makedirs(as_json, exist_ok=True)
    CLIPTokenizer.from_pretrained(subset).backend_tokenizer.save(os.path.join(as_json, "tokenizer.json"))
    cases = []
    for pad, name in (("<|endoftext|>", "sd-1.5"), ("!", "sd-2.1")):
        reference = CLIPTokenizer.from_pretrained(full, pad_token=pad)
        small = CLIPTokenizer.from_pretrained(subset, pad_token=pad)
        for prompt in PROMPTS:
            ids = reference(prompt, padding="max_length", max_length=77, truncation=True).input_ids
            assert small(prompt, padding="max_length", max_length=77, truncation=True).input_ids == ids, prompt
            cases.append(dict(padding=name, pad_token=pad, prompt=prompt, ids=ids))
    return dict(tokenizer_class=type(tokenizer).__name__, vocab_size=len(vocab),
                subset_vocab=len(sub_vocab), subset_merges=len(sub_merges), cases=cases)


def write_tokenizer(folder, vocab, merges):
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)


def text_encoder_golden(tokens):
    """Tiny CLIPTextModels of both activations (the layout of the repos' text_encoder, named
    weights under "text_model." as the repos name them), on real token ids."""
    # Three prompts of different lengths and words ("a lighthouse at dusk" and its upper-case
    # twin would tokenize alike).
    chosen = [tokens["cases"][i]["ids"] for i in (1, 3, 8)]
    assert len({tuple(ids) for ids in chosen}) == len(chosen), "text encoder prompts tokenize alike"
    ids = torch.tensor(chosen, dtype=torch.int64)
    tensors, manifests = {"ids": ids}, {}
    for act in ("quick_gelu", "gelu"):
        model = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, hidden_act=act, layer_norm_eps=1e-5,
            projection_dim=32)).eval()
        prefix = "" if next(iter(model.state_dict())).startswith("text_model.") else "text_model."
        named_weights(model, prefix)
        manifests[act] = {prefix + k: list(v.shape) for k, v in model.named_parameters()}
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
        tensors[f"{act}.hidden"] = out.last_hidden_state
        # What SDXL's pipeline takes from both its encoders: hidden_states[-2], not normalized.
        tensors[f"{act}.penultimate"] = out.hidden_states[-2]
    # SDXL's second encoder: CLIPTextModelWithProjection, OpenCLIP's gelu and "!" padding, its
    # config's legacy eos_token_id (2: the pooled token is the first of the largest id).
    bang = [case["ids"] for case in tokens["cases"] if case["pad_token"] == "!"]
    ids = torch.tensor([bang[i] for i in (1, 3, 8)], dtype=torch.int64)
    model = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
        projection_dim=24, eos_token_id=2)).eval()
    named_weights(model)
    manifests["gelu-projection"] = {k: list(v.shape) for k, v in model.named_parameters()}
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    tensors["projection.ids"] = ids
    tensors["projection.penultimate"] = out.hidden_states[-2]
    tensors["projection.pooled"] = out.text_embeds
    return manifests, tensors


# ---------------------------------------------------------------------------------------------
# Real-size layouts: each preset's models built from its repo's config.json (copied by hand, as
# REPO_SCHEDULERS) on PyTorch's meta device (shapes only, no memory), their tensors' names and
# shapes, so the Rust side can build its real-size models against them without weights.
SD_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
               block_out_channels=[320, 640, 1280, 1280], downsample_padding=1,
               down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
               up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
               mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, flip_sin_to_cos=True,
               freq_shift=0, act_fn="silu", center_input_sample=False)
REAL_UNETS = {
    "sd-1.5": dict(SD_UNET, cross_attention_dim=768, attention_head_dim=8),
    "sd-2.1": dict(SD_UNET, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                   use_linear_projection=True),
    "sdxl-turbo": dict(
        act_fn="silu", addition_embed_type="text_time", addition_time_embed_dim=256,
        attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280],
        center_input_sample=False, cross_attention_dim=2048,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4,
        layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32,
        out_channels=4, projection_class_embeddings_input_dim=2816, sample_size=64,
        transformer_layers_per_block=[1, 2, 10],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        upcast_attention=False, use_linear_projection=True),
}
REAL_UNETS["sd-turbo"] = REAL_UNETS["sd-2.1"]
# vae/config.json: the same layout in every repo (SDXL's differs in scaling_factor only).
REAL_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512],
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                layers_per_block=2, norm_num_groups=32, sample_size=512)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
              num_hidden_layers=12, hidden_act="quick_gelu", projection_dim=768)
OPEN_CLIP_H = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                   num_hidden_layers=23, hidden_act="gelu", projection_dim=512)
OPEN_CLIP_BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
                       num_hidden_layers=32, hidden_act="gelu", projection_dim=1280)
# (preset, folder) -> (config, with projection: CLIPTextModelWithProjection)
REAL_TEXT = {
    "sd-1.5/text_encoder": (CLIP_L, False),
    "sd-2.1/text_encoder": (OPEN_CLIP_H, False),
    "sd-turbo/text_encoder": (OPEN_CLIP_H, False),
    "sdxl-turbo/text_encoder": (CLIP_L, False),
    "sdxl-turbo/text_encoder_2": (OPEN_CLIP_BIG_G, True),
}


def layout(model, rename=lambda name: name):
    return {rename(k): list(v.shape) for k, v in model.named_parameters()}


def real_size_layouts():
    def text_name(name):
        # As the repos store them: under "text_model.", the projection at the root.
        return name if name.startswith("text_projection.") else "text_model." + name.removeprefix("text_model.")
    with torch.device("meta"):
        unets = {preset: layout(UNet2DConditionModel(**config)) for preset, config in REAL_UNETS.items()}
        vae = layout(AutoencoderKL(**REAL_VAE))
        text = {}
        for name, (config, projection) in REAL_TEXT.items():
            kind = CLIPTextModelWithProjection if projection else CLIPTextModel
            model = kind(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77,
                                        layer_norm_eps=1e-5, **config))
            text[name] = layout(model, text_name)
    return dict(unet=unets, vae=vae, text_encoder=text)


# ---------------------------------------------------------------------------------------------
def main():
    import tempfile
    versions = dict(torch=torch.__version__, diffusers=diffusers.__version__,
                    transformers=__import__("transformers").__version__)
    unets = {name: tiny_unet(linear) for name, linear in UNET_CONFIGS.items()}
    unets["sdxl"] = tiny_sdxl_unet()
    vae = tiny_vae(VAE_SCALE["sd-1.5"])
    taesd = tiny_taesd()

    manifests = {name: {k: list(v.shape) for k, v in unet.state_dict().items()} for name, unet in unets.items()}
    save_file(state(vae), os.path.join(OUT, "vae.safetensors"))
    taesd_diffusers, taesd_published, taesd_tensors = taesd_golden(taesd)
    save_file(taesd_diffusers, os.path.join(OUT, "taesd-diffusers.safetensors"))
    save_file(taesd_published, os.path.join(OUT, "taesd-published.safetensors"))
    save_file(taesd_tensors, os.path.join(OUT, "taesd-golden.safetensors"))

    loop_cases, loop_tensors = loop_golden(unets, vae)
    save_file({k: v.contiguous() for k, v in loop_tensors.items()}, os.path.join(OUT, "loop-golden.safetensors"))
    unet_forward, unet_forward_tensors = unet_forward_golden()
    save_file({k: v.contiguous() for k, v in unet_forward_tensors.items()},
              os.path.join(OUT, "unet-forward-golden.safetensors"))
    vae_cases, vae_tensors = vae_golden(tiny_vae(VAE_SCALE["sd-1.5"]))
    save_file({k: v.contiguous() for k, v in vae_tensors.items()}, os.path.join(OUT, "vae-golden.safetensors"))
    components = dict(vae=vae, text_encoder=None, tokenizer=None, unet=unets["linear-projection"],
                      safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    with tempfile.TemporaryDirectory() as tmp:
        tokens = tokenizer_golden(tmp)
    text_manifests, text_tensors = text_encoder_golden(tokens)
    save_file(text_tensors, os.path.join(OUT, "text-encoder-golden.safetensors"))
    golden = dict(
        versions=versions,
        text_encoder=dict(weights=text_manifests, hidden_size=32, intermediate_size=64, heads=4, layers=2),
        repo_schedulers=REPO_SCHEDULERS,
        schedulers=scheduler_golden(),
        img2img=img2img_golden(components),
        loop=dict(cases=loop_cases, cross_attention_dim=CROSS_DIM, tokens=TOKENS, unet_tensors=manifests),
        unet_forward=unet_forward,
        vae=dict(cases=vae_cases),
        tokenizer=tokens,
    )
    with open(os.path.join(OUT, "real-size-layouts.json"), "w") as f:
        json.dump(real_size_layouts(), f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")
    print(f"golden files written to {OUT}")


if __name__ == "__main__":
    main()
