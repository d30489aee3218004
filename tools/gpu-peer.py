#!/usr/bin/env python3
"""The PyTorch peer of `dreamframe bench-sd`: the same work on the same sizes with diffusers and
random weights, so our time / PyTorch's time is measured side by side on one machine.

    python3 tools/gpu-peer.py [--device cuda] [--size 512] [--warmups 3] [--runs 20] \
        [--compile] > peer.txt
    python3 tools/gpu-peer.py --join bench-sd-*.txt peer-*.txt   # the ratio table

Lines: `peer <key> variant=<v> median_ms=<x> min_ms=.. p10_ms=.. p90_ms=.. max_ms=.. runs=N
per=<frame|call>`, keys as bench-sd's (vae_b1/4/10, vae_64px_b1, taesd_b10, sd-turbo/unet_step,
sd-1.5/unet_step, conv_shapes: bench-sd's convolutions alone). Variants: `eager` (NCHW), `channels_last`, and with --compile
`compiled` (torch.compile of the channels-last model, default mode); the join takes PyTorch's
fastest. Every model is timed in every variant.

What makes it the fair peer (each was a handicap of an earlier version):
- the device is the default only while the models are built (`with torch.device(...)`): a
  default device adds host work to every later torch call;
- `torch.backends.cudnn.benchmark = True`, as ours times cuDNN's algorithms once per shape;
- `--warmups` untimed calls (3) and `--runs` timed ones (20) per model and variant, the
  spread printed beside the median;
- the attention processor each model uses is printed (`attention` lines);
- decoders include what ours does after the model: diffusers' postprocess of the [-1, 1]
  output (TAESD's decoder too: it returns [-1, 1]) to u8 on the device, and the copy to the host.
"""
import argparse
import re
import statistics
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=512, help="picture size in pixels")
    parser.add_argument("--warmups", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="add torch.compile variants")
    parser.add_argument("--only", default="", help="comma-separated keys (default: all)")
    parser.add_argument("--float32", action="store_true", help="f32 instead of f16 (CPU checks)")
    parser.add_argument("--join", nargs="+", metavar="FILE", help="print the ratio table")
    args = parser.parse_args()
    if args.join:
        return join(args.join)
    bench(args)


def spread(times):
    """(median, min, p10, p90, max) of `times`, the percentiles as bench-sd takes them."""
    ordered = sorted(times)
    at = lambda share: ordered[min(len(ordered) * share // 100, len(ordered) - 1)]
    return statistics.median(ordered), ordered[0], at(10), at(90), ordered[-1]


def bench(args):
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel

    device, dtype = torch.device(args.device), torch.float32 if args.float32 else torch.float16
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    latent = args.size // 8
    only = set(filter(None, args.only.split(",")))
    print(f"peer torch={torch.__version__} device={device} dtype={dtype} size={args.size} "
          f"cudnn.benchmark={torch.backends.cudnn.benchmark if cuda else '-'} "
          f"warmups={args.warmups} runs={args.runs}", flush=True)

    def wanted(key):
        return not only or key in only

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def measure(key, items, body, variant, preset=None):
        name = f"{preset}/{key}" if preset else key
        with torch.inference_mode():
            started = time.perf_counter()
            for _ in range(args.warmups):
                body()
            sync()
            warm_s = time.perf_counter() - started
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                body()
                sync()
                times.append((time.perf_counter() - started) * 1e3 / items)
        median, low, p10, p90, high = spread(times)
        print(f"peer {name} variant={variant} median_ms={median:.3f} min_ms={low:.3f} "
              f"p10_ms={p10:.3f} p90_ms={p90:.3f} max_ms={high:.3f} runs={len(times)} "
              f"per={'frame' if items > 1 else 'call'} warmup_s={warm_s:.1f}", flush=True)

    def variants(model):
        """(name, module) for eager NCHW, channels-last and, with --compile, compiled."""
        yield "eager", model
        model = model.to(memory_format=torch.channels_last)
        yield "channels_last", model
        if args.compile:
            yield "compiled", torch.compile(model)

    def attention(name, model):
        processors = getattr(model, "attn_processors", {})
        kinds = sorted({type(p).__name__ for p in processors.values()}) or ["none"]
        print(f"attention {name} processors={','.join(kinds)} "
              f"sdpa={hasattr(torch.nn.functional, 'scaled_dot_product_attention')}", flush=True)

    def to_u8(images):
        """diffusers' postprocess of a [-1, 1] picture, to u8 on the host."""
        return (images / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8).cpu()

    def latents(batch, side):
        return torch.randn(batch, 4, side, side, device=device, dtype=dtype)

    # Weights are made on the device (random init of ~1.7 G parameters on the host takes long);
    # the default device is set only for that.
    vae_keys = [k for k in ("vae_b1", "vae_b4", "vae_b10", "vae_64px_b1") if wanted(k)]
    if vae_keys:
        with torch.device(device):
            # SD 1.5 / 2.x VAE (both presets use the same layout).
            vae = AutoencoderKL(
                in_channels=3, out_channels=3, latent_channels=4,
                block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, norm_num_groups=32, sample_size=args.size,
            ).to(dtype).eval()
        attention("vae", vae)
        for variant, model in variants(vae):
            for key in vae_keys:
                batch = 1 if key == "vae_64px_b1" else int(key[len("vae_b"):])
                z = latents(batch, 8 if key == "vae_64px_b1" else latent)
                measure(key, batch, lambda: to_u8(model.decode(z).sample), variant)
        del vae, model

    if wanted("taesd_b10"):
        with torch.device(device):
            taesd = AutoencoderTiny(
                in_channels=3, out_channels=3, latent_channels=4,
                encoder_block_out_channels=(64, 64, 64, 64),
                decoder_block_out_channels=(64, 64, 64, 64),
                num_encoder_blocks=(1, 3, 3, 3), num_decoder_blocks=(3, 3, 3, 1),
                act_fn="relu", upsampling_scaling_factor=2, scaling_factor=1.0,
            ).to(dtype).eval()
        z = latents(10, latent)
        for variant, model in variants(taesd.decoder):
            measure("taesd_b10", 10, lambda: to_u8(model(z)), variant)
        del taesd, model

    # src/commands/bench/convs.rs CONV_SHAPES: key -> (channels in and out, side, batch).
    conv_shapes = {
        "conv_512c_64px_b10": (512, 64, 10), "conv_512c_128px_b10": (512, 128, 10),
        "conv_256c_256px_b10": (256, 256, 10), "conv_128c_512px_b10": (128, 512, 10),
        "conv_64c_512px_b10": (64, 512, 10), "conv_320c_64px_b2": (320, 64, 2),
    }
    for key, (channels, side, batch) in conv_shapes.items():
        if not wanted(key) and not wanted("conv_shapes"):
            continue
        with torch.device(device):
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(dtype).eval()
        x = torch.randn(batch, channels, side, side, device=device, dtype=dtype)
        for variant, model in variants(conv):
            # The input in the layout the variant's weights are in, as a model would hand it.
            inp = x if variant == "eager" else x.to(memory_format=torch.channels_last)
            measure(key, 1, lambda: model(inp), variant)
        del conv, model, x

    unets = {
        # stabilityai/sd-turbo (SD 2.1 layout): linear projections, head dims per block.
        "sd-turbo": dict(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                         use_linear_projection=True, batch=1),
        # SD 1.5 with classifier-free guidance: the UNet sees [uncond; cond].
        "sd-1.5": dict(cross_attention_dim=768, attention_head_dim=8,
                       use_linear_projection=False, batch=2),
    }
    for preset, config in unets.items():
        if not wanted(f"{preset}/unet_step") and not wanted("unet_step"):
            continue
        batch = config.pop("batch")
        with torch.device(device):
            unet = UNet2DConditionModel(
                sample_size=latent, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280),
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                norm_num_groups=32, flip_sin_to_cos=True, freq_shift=0, **config,
            ).to(dtype).eval()
        attention(f"{preset}/unet", unet)
        x = latents(batch, latent)
        text = torch.randn(batch, 77, config["cross_attention_dim"], device=device, dtype=dtype)
        t = torch.tensor(500, device=device)
        for variant, model in variants(unet):
            measure("unet_step", 1, lambda: model(x, t, text).sample, variant, preset=preset)
        del unet, model


def join(files):
    """Ours (bench-sd's last conv setup, i.e. the default) / PyTorch's fastest variant, per
    round: the files in the order given, a `dreamframe bench-sd` heading or a `peer torch=`
    heading starting each side's round anew, so `ours, peer, ours, peer` gives two rounds."""
    rounds = {"ours": [], "peer": []}
    preset = None
    for path in files:
        for line in open(path):
            head = re.match(r"dreamframe bench-sd: preset (\S+)", line)
            if head:
                preset = head.group(1)
                side = rounds["ours"]
                if not side or any(p == preset for p, _ in side[-1]):
                    side.append({})
                continue
            if line.startswith("peer torch="):
                rounds["peer"].append({})
                continue
            m = re.match(r"(\w+) setup=(\S+) median_ms=([\d.]+)", line)
            if m and preset and rounds["ours"]:
                rounds["ours"][-1][(preset, m.group(1))] = float(m.group(3))
            m = re.match(r"peer (\S+) variant=(\S+) median_ms=([\d.]+)", line)
            if m and rounds["peer"]:
                name, value = m.group(1), float(m.group(3))
                keys = [tuple(name.split("/"))] if "/" in name else [
                    (p, name) for p in ("sd-turbo", "sd-1.5")]
                for key in keys:
                    best = rounds["peer"][-1].get(key)
                    if best is None or value < best[1]:
                        rounds["peer"][-1][key] = (m.group(2), value)
    ours, theirs = rounds["ours"], rounds["peer"]
    print(f"{'preset':<9} {'measure':<26} {'round':>5} {'ours ms':>9} {'pytorch ms':>10} "
          f"{'(variant)':<14} {'ours/pytorch':>12}")
    keys = sorted({k for r in ours for k in r})
    for key in keys:
        ratios = []
        for i in range(max(len(ours), len(theirs))):
            mine = ours[i].get(key) if i < len(ours) else None
            peer = theirs[i].get(key) if i < len(theirs) else None
            ratio = mine / peer[1] if mine is not None and peer else None
            if ratio is not None:
                ratios.append(ratio)
            print(f"{key[0]:<9} {key[1]:<26} {i + 1:>5} "
                  f"{f'{mine:.3f}' if mine is not None else '-':>9} "
                  f"{f'{peer[1]:.3f}' if peer else '-':>10} {peer[0] if peer else '':<14} "
                  f"{f'{ratio:.2f}x' if ratio is not None else '-':>12}")
        if len(ratios) > 1:
            print(f"{key[0]:<9} {key[1]:<26} {'all':>5} {'':>9} {'':>10} {'':<14} "
                  f"{min(ratios):.2f}-{max(ratios):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
