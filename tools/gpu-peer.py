#!/usr/bin/env python3
"""The PyTorch peer of `dreamframe bench-sd`: the same work on the same sizes with
diffusers, random weights, so our time / PyTorch's time is measured side by side in one run.

    python3 tools/gpu-peer.py [--device cuda] [--size 512] [--runs 5] > peer.txt
    python3 tools/gpu-peer.py --join bench-sd-*.txt peer.txt   # the ratio table

Lines: `peer <key> variant=<plain|channels_last> median_ms=<x> per=<frame|call>`, keys as
bench-sd's (vae_b1/4/10, taesd_b10, unet_step for sd-turbo and sd-1.5). Decoders include what
ours does after the model: [-1, 1] -> u8 on the GPU and the copy to the host.
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
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--float32", action="store_true", help="f32 instead of f16 (CPU checks)")
    parser.add_argument("--join", nargs="+", metavar="FILE", help="print the ratio table")
    args = parser.parse_args()
    if args.join:
        return join(args.join)
    bench(args)


def bench(args):
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel

    device, dtype = torch.device(args.device), torch.float32 if args.float32 else torch.float16
    torch.manual_seed(0)
    latent = args.size // 8

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def measure(key, items, body, variant="plain", preset=None):
        with torch.inference_mode():
            body()
            sync()
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                body()
                sync()
                times.append((time.perf_counter() - started) * 1e3 / items)
        name = f"{preset}/{key}" if preset else key
        print(f"peer {name} variant={variant} median_ms={statistics.median(times):.3f} "
              f"per={'frame' if items > 1 else 'call'}", flush=True)

    # Weights made on the device (random init of ~1.7 G parameters on the host takes long).
    torch.set_default_device(device)

    def to_u8(images):
        return (images / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8).cpu()

    # SD 1.5 / 2.x VAE (both presets use the same layout).
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2, norm_num_groups=32, sample_size=args.size,
    ).to(device, dtype).eval()
    for variant in ("plain", "channels_last"):
        if variant == "channels_last":
            vae = vae.to(memory_format=torch.channels_last)
        for batch in (1, 4, 10):
            z = torch.randn(batch, 4, latent, latent, device=device, dtype=dtype)
            measure(f"vae_b{batch}", batch, lambda: to_u8(vae.decode(z).sample), variant)
    z = torch.randn(1, 4, 8, 8, device=device, dtype=dtype)
    measure("vae_64px_b1", 1, lambda: to_u8(vae.decode(z).sample), "channels_last")
    del vae

    taesd = AutoencoderTiny(
        in_channels=3, out_channels=3, latent_channels=4,
        encoder_block_out_channels=(64, 64, 64, 64), decoder_block_out_channels=(64, 64, 64, 64),
        num_encoder_blocks=(1, 3, 3, 3), num_decoder_blocks=(3, 3, 3, 1),
        act_fn="relu", upsampling_scaling_factor=2, scaling_factor=1.0,
    ).to(device, dtype).eval()
    z = torch.randn(10, 4, latent, latent, device=device, dtype=dtype)
    # TAESD's decoder output is already [0, 1].
    measure("taesd_b10", 10, lambda: taesd.decoder(z).clamp(0, 1).mul(255).round().to(torch.uint8).cpu())
    del taesd

    unets = {
        # stabilityai/sd-turbo (SD 2.1 layout): linear projections, head dims per block.
        "sd-turbo": dict(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                         use_linear_projection=True, batch=1),
        # SD 1.5 with classifier-free guidance: the UNet sees [uncond; cond].
        "sd-1.5": dict(cross_attention_dim=768, attention_head_dim=8,
                       use_linear_projection=False, batch=2),
    }
    for preset, config in unets.items():
        batch = config.pop("batch")
        unet = UNet2DConditionModel(
            sample_size=latent, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            norm_num_groups=32, flip_sin_to_cos=True, freq_shift=0, **config,
        ).to(device, dtype).eval()
        x = torch.randn(batch, 4, latent, latent, device=device, dtype=dtype)
        text = torch.randn(batch, 77, config["cross_attention_dim"], device=device, dtype=dtype)
        t = torch.tensor(500, device=device)
        measure("unet_step", 1, lambda: unet(x, t, text).sample, preset=preset)
        del unet


def join(files):
    """Ours (the last conv setup bench-sd ran, i.e. the default) / PyTorch's best variant."""
    ours, theirs, preset = {}, {}, None
    for path in files:
        for line in open(path):
            head = re.match(r"dreamframe bench-sd: preset (\S+)", line)
            if head:
                preset = head.group(1)
                continue
            m = re.match(r"(\w+) setup=(\S+) median_ms=([\d.]+)", line)
            if m and preset:
                ours.setdefault((preset, m.group(1)), {})[m.group(2)] = float(m.group(3))
            m = re.match(r"peer (\S+) variant=(\S+) median_ms=([\d.]+)", line)
            if m:
                name, value = m.group(1), float(m.group(3))
                keys = [tuple(name.split("/"))] if "/" in name else [
                    (p, name) for p in ("sd-turbo", "sd-1.5")]
                for key in keys:
                    theirs.setdefault(key, {})[m.group(2)] = value
    print(f"{'preset':<9} {'measure':<16} {'ours per-call':>13} {'ours now':>9} "
          f"{'pytorch':>9} {'(variant)':<14} {'ours/pytorch':>12}")
    for key in sorted(ours):
        setups = ours[key]
        now = list(setups.values())[-1]
        old = setups.get("per-call")
        peer = theirs.get(key)
        best = min(peer.items(), key=lambda kv: kv[1]) if peer else None
        print(f"{key[0]:<9} {key[1]:<16} {old if old is not None else '-':>13} {now:>9.3f} "
              f"{best[1] if best else '-':>9} {best[0] if best else '':<14} "
              f"{(f'{now / best[1]:.2f}x') if best else '-':>12}")


if __name__ == "__main__":
    sys.exit(main())
