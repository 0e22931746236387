"""diffusers' SDXL pipelines timed as bench/image_times.py times swapgraph's: whole images with
the models already loaded (the text encoders, the sampler's steps, the VAE decode, the PNG
saved), the UNet, the ControlNet and the VAE's decoder under torch.compile, as a user after speed
runs them.

    python bench/diffusers_images.py --size 1024 --steps 30 --images 5 --compile default [--controlnet]

Random weights at SDXL's sizes (the UNet config of bench/diffusers_baseline.py), f16, with the
VAE in bf16 as swapgraph runs it (SDXL's VAE overflows f16, where diffusers would upcast it to
f32), and CLIP's tokenizer built from the standard vocabulary swapgraph embeds (as the fixtures'
script builds it). Euler with Karras
sigmas and CFG 5, as the example workflows sample. `--controlnet` adds what the main job adds: an
SDXL ControlNet of the UNet's config (IdentityNet's architecture) with a hint image, and InstantID's
16 face tokens after the prompt's 77 (here random, given to the UNet and the ControlNet as
context; InstantID's own attention keeps them apart at the same cost). Like bench/image_times.py
it makes warm-up images first (two: the compile happens there), then `--images` more, each with a new seed
and a prompt that differs by a word, timed from the call to the saved file. `--tiny` builds small
models on the CPU to check the script. Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from diffusers import (AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline,
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "nodes", "sdxl", "fixtures")]
from diffusers_baseline import SDXL  # noqa: E402
from make_fixtures import write_clip_vocabulary  # noqa: E402

PROMPT = "a portrait photo of an astronaut, studio lighting, film grain"
NEGATIVE = "blurry, low quality, deformed"
FACE_TOKENS = 16

SDXL_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=1024,
                scaling_factor=0.13025, force_upcast=False)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              hidden_act="quick_gelu", projection_dim=768)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              hidden_act="gelu", projection_dim=1280)

TINY_UNET = dict(sample_size=16, in_channels=4, out_channels=4,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(32, 64),
                 layers_per_block=1, transformer_layers_per_block=(1, 1), attention_head_dim=(2, 4),
                 cross_attention_dim=64, use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=32)
TINY_VAE = dict(SDXL_VAE, block_out_channels=[32, 32, 32, 32], layers_per_block=1)
TINY_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32)


def tokenizers(folder):
    """CLIP-L's and bigG's tokenizers (end-of-text and "!" padding) from the standard merges."""
    files = write_clip_vocabulary(folder)
    return (CLIPTokenizer(*files, pad_token="<|endoftext|>", model_max_length=77),
            CLIPTokenizer(*files, pad_token="!", model_max_length=77))


def pipeline(args, device, dtype, folder):
    tiny = args.tiny
    with torch.device(device):
        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SDXL))
        vae = AutoencoderKL(**(TINY_VAE if tiny else SDXL_VAE))
        clip_l = CLIPTextModel(CLIPTextConfig(**dict(CLIP_L, **(TINY_CLIP if tiny else {}))))
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**dict(CLIP_G, **(TINY_CLIP if tiny else {}))))
        controlnet = ControlNetModel.from_unet(unet) if args.controlnet else None
    models = dict(unet=unet.to(dtype), vae=vae.to(torch.bfloat16),
                  text_encoder=clip_l.to(dtype), text_encoder_2=clip_g.to(dtype))
    if controlnet is not None:
        models["controlnet"] = controlnet.to(dtype)
    tokenizer, tokenizer_2 = tokenizers(folder)
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", use_karras_sigmas=True,
                                       timestep_spacing="leading", steps_offset=1)
    kind = StableDiffusionXLControlNetPipeline if args.controlnet else StableDiffusionXLPipeline
    pipe = kind(tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=scheduler, add_watermarker=False, **models)
    pipe.set_progress_bar_config(disable=True)
    if args.channels_last:
        for name in ("unet", "vae", "controlnet"):
            if getattr(pipe, name, None) is not None:
                getattr(pipe, name).to(memory_format=torch.channels_last)
    # The pipelines hand the VAE latents in the UNet's dtype, and cast them only for an f16 VAE
    # they upcast: the decode takes them in its own.
    decode, vae_dtype = pipe.vae.decode, pipe.vae.dtype

    def decode_in_vae_dtype(latents, *rest, **options):
        return decode(latents.to(vae_dtype), *rest, **options)

    pipe.vae.decode = decode_in_vae_dtype
    if args.compile:
        pipe.unet = torch.compile(pipe.unet, mode=args.compile)
        pipe.vae.decode = torch.compile(pipe.vae.decode, mode=args.compile)
        if args.controlnet:
            pipe.controlnet = torch.compile(pipe.controlnet, mode=args.compile)
    return pipe


def image(pipe, args, index, folder, hint):
    """One whole image, saved: the prompt ends in word `index`, the seed is `index` (the
    warm-ups take 1001 and 1002)."""
    prompt = f"{PROMPT}, variant {index}"
    generator = torch.Generator("cpu").manual_seed(index)
    common = dict(num_inference_steps=args.steps, guidance_scale=5.0, height=args.size, width=args.size,
                  generator=generator)
    if args.controlnet:
        positive, negative, pooled, negative_pooled = pipe.encode_prompt(prompt, negative_prompt=f"{NEGATIVE}, variant {index}")
        face = torch.randn(1, FACE_TOKENS, positive.shape[-1], generator=generator).to(positive)
        positive, negative = torch.cat([positive, face], 1), torch.cat([negative, torch.zeros_like(face)], 1)
        result = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, pooled_prompt_embeds=pooled,
                      negative_pooled_prompt_embeds=negative_pooled, image=hint, **common)
    else:
        result = pipe(prompt, negative_prompt=f"{NEGATIVE}, variant {index}", **common)
    result.images[0].save(os.path.join(folder, f"image_{index:05}.png"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--compile", choices=("default", "max-autotune-no-cudagraphs", "max-autotune"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--controlnet", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="small models on the CPU, to check the script")
    args = parser.parse_args()
    device, dtype = ("cpu", torch.float32) if args.tiny else ("cuda", torch.float16)
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        pipe = pipeline(args, device, dtype, folder)
        hint = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        # Two warm-up images: the first compiles, the second any graph the compiler guards
        # against changes between calls.
        warm_up = []
        for index in (1001, 1002):
            began = time.perf_counter()
            image(pipe, args, index, folder, hint)
            warm_up.append(time.perf_counter() - began)
        times = []
        for index in range(1, args.images + 1):
            began = time.perf_counter()
            image(pipe, args, index, folder, hint)
            times.append(time.perf_counter() - began)
        saved = len([name for name in os.listdir(folder) if name.endswith(".png")])
    label = "diffusers SDXL%s pipeline%s%s" % (" ControlNet" if args.controlnet else "",
                                               f", torch.compile ({args.compile})" if args.compile else ", eager",
                                               ", channels last" if args.channels_last else "")
    print(json.dumps({"baseline": label, "size": args.size, "steps": args.steps, "images_saved": saved,
                      "warm_up_s": [round(t, 3) for t in warm_up], "image_s": [round(t, 3) for t in times],
                      "median_image_s": round(statistics.median(times), 3),
                      "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if device == "cuda" else None}))


if __name__ == "__main__":
    main()
