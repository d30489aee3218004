"""Real-size CLIP text encoders with random weights: ours (text_encoder.rs) against
transformers' CLIPTextModel at the presets' real configs (CI checks tiny ones). Not run by CI.

For each preset's text encoder (sd-1.5: OpenAI CLIP ViT-L/14; sd-2.1 and sd-turbo: OpenCLIP
ViT-H/14 cut to 23 layers, as the model repos ship it; sdxl-turbo: ViT-L and OpenCLIP bigG/14,
penultimate layer) this writes, under OUT/<name>/:
  text_encoder/model.safetensors   random weights (fixed seed), the repo's layout and names
  tokenizer/vocab.json, merges.txt the real CLIP vocabulary (open-clip-torch's BPE file)
  golden.safetensors               token ids and the hidden states for 5 prompts that the
                                   pipelines' encode_prompt takes (and for sdxl-2, a
                                   CLIPTextModelWithProjection, the pooled text_embeds)
Then `cargo test --release --lib text_encoders_at_real_size -- --ignored` with
DREAMFRAME_TEXT_REFERENCE=OUT compares ours. tools/reference/text_encoders.sh does both.
"""

import os
import sys

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, os.path.dirname(__file__))
from make_golden import clip_vocab_and_merges, write_tokenizer  # noqa: E402

OUT = os.path.abspath(sys.argv[1])
PROMPTS = [
    "a lighthouse at dusk, oil painting",
    "",
    "(masterpiece:1.2), surreal dreamlike landscape by René Magritte, 8k",
    "東京の夜景, neon lights reflected in rain",
    "word " * 100,
]
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
              num_hidden_layers=12, hidden_act="quick_gelu", projection_dim=768)
ENCODERS = {
    # text_encoder/config.json of stable-diffusion-v1-5, stable-diffusion-2-1 and sdxl-turbo
    # (text_encoder, text_encoder_2); (config, pad token, which hidden state the pipeline uses)
    "sd-1.5": (CLIP_L, "<|endoftext|>", "last"),
    "sd-2.1": (dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                    num_hidden_layers=23, hidden_act="gelu", projection_dim=512), "!", "last"),
    "sdxl-1": (CLIP_L, "<|endoftext|>", "penultimate"),
    # eos_token_id 2 as in the repo's config (the legacy pooling: the first of the largest id).
    "sdxl-2": (dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
                    num_hidden_layers=32, hidden_act="gelu", projection_dim=1280, eos_token_id=2),
               "!", "penultimate"),
}

torch.set_num_threads(os.cpu_count() or 2)
vocab, merges = clip_vocab_and_merges()
for index, (preset, (config, pad, output)) in enumerate(ENCODERS.items()):
    folder = os.path.join(OUT, preset)
    os.makedirs(os.path.join(folder, "text_encoder"), exist_ok=True)
    os.makedirs(os.path.join(folder, "tokenizer"), exist_ok=True)
    write_tokenizer(os.path.join(folder, "tokenizer"), vocab, merges)
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"), pad_token=pad)
    torch.manual_seed(100 + index)
    # SDXL's second encoder is a CLIPTextModelWithProjection: its pooled output is used too.
    kind = CLIPTextModelWithProjection if preset == "sdxl-2" else CLIPTextModel
    model = kind(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77,
                                layer_norm_eps=1e-5, **config)).eval()
    # A trained model's scale: the default init (std 0.02) would make every layer nearly the
    # identity and hide errors in attention.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 1.0 / p.shape[1] ** 0.5)
    # The repos' files name every tensor under "text_model." (transformers 5 leaves it out).
    def stored(name):
        return name if name.startswith("text_projection.") else "text_model." + name.removeprefix("text_model.")
    save_file({stored(k): v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(folder, "text_encoder", "model.safetensors"))
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    # StableDiffusionPipeline takes last_hidden_state; StableDiffusionXLPipeline hidden_states[-2].
    hidden = out.last_hidden_state if output == "last" else out.hidden_states[-2]
    golden = {"ids": ids.to(torch.int64).contiguous(), "hidden": hidden.contiguous()}
    if kind is CLIPTextModelWithProjection:
        golden["pooled"] = out.text_embeds.contiguous()
    save_file(golden, os.path.join(folder, "golden.safetensors"))
    print(f"{preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters, hidden {tuple(hidden.shape)}")
