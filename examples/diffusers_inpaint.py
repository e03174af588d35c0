"""Refine the output of a diffusers inpainting pipeline with a PixPerfect refiner.

    pip install -e '.[diffusers]'
    pixperfect export runs/demo/checkpoints/last.ckpt runs/demo/release
    python examples/diffusers_inpaint.py --pipeline PATH_OR_HUB_ID --refiner runs/demo/release \
        --image photo.png --mask mask.png --prompt "a wooden bench" --out refined.png

``--pipeline`` is your inpainting weights (anything ``AutoPipelineForInpainting`` loads,
e.g. a Stable Diffusion inpainting checkpoint); nothing is downloaded for you.

An inpainting pipeline re-decodes the whole frame through its VAE, so its output differs
from the photo everywhere, and it works at a multiple of 8 px. The refiner expects what an
editor hands the user: the generated pixels inside the mask pasted onto the original photo
(docs/method.md §1: ``x_gen = m * x_decoded + (1 - m) * x_original``). So
:func:`refine_pipeline_output` resizes the output back to the photo, pastes the photo back
outside the mask, and then lets the refiner remove the seams that the paste-back leaves.
"""

from __future__ import annotations

import argparse

from PIL import Image

from pixperfect.inference import MASK_THRESHOLD, Refiner


def binary_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Mode "L" mask of ``size``: 255 where ``mask`` is at or above the refiner's threshold
    (white = edited), resized with nearest neighbour if needed."""
    grey = mask.convert("L")
    if grey.size != size:
        grey = grey.resize(size, Image.Resampling.NEAREST)
    cut = round(MASK_THRESHOLD * 255)
    return grey.point(lambda v: 255 if v >= cut else 0)


def refine_pipeline_output(
    pipe_output_image: Image.Image,
    mask: Image.Image,
    refiner: Refiner,
    original: Image.Image | None = None,
) -> Image.Image:
    """The refined edit, at the size of ``original`` (or of the output without it).

    ``pipe_output_image``: ``pipe(...).images[0]``; ``mask``: the mask given to the pipeline
    (white = inpainted); ``original``: the photo given to the pipeline. With ``original``,
    the photo is pasted back outside the mask first (recommended: it is what the refiner was
    trained on); without it, the output is refined as it is.
    """
    output = pipe_output_image.convert("RGB")
    if original is not None:
        photo = original.convert("RGB")
        if output.size != photo.size:
            output = output.resize(photo.size, Image.Resampling.LANCZOS)
        edit = binary_mask(mask, photo.size)
        composite = Image.composite(output, photo, edit)
    else:
        edit = binary_mask(mask, output.size)
        composite = output
    return refiner(composite, edit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True, help="your inpainting weights (path/id)")
    parser.add_argument("--refiner", required=True, help="folder from `pixperfect export`")
    parser.add_argument("--image", required=True)
    parser.add_argument("--mask", required=True, help="white = inpaint")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from diffusers import AutoPipelineForInpainting

    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    pipe = AutoPipelineForInpainting.from_pretrained(args.pipeline, torch_dtype=dtype)
    pipe = pipe.to(args.device)
    photo, mask = Image.open(args.image).convert("RGB"), Image.open(args.mask)
    w, h = (s // 8 * 8 for s in photo.size)
    generated = pipe(
        prompt=args.prompt,
        image=photo,
        mask_image=mask.convert("L"),
        width=w,
        height=h,
        num_inference_steps=args.steps,
        generator=torch.Generator(args.device).manual_seed(args.seed),
    ).images[0]
    refiner = Refiner.from_pretrained(args.refiner, args.device)
    refine_pipeline_output(generated, mask, refiner, original=photo).save(args.out)
    print(f"refined: {args.out}")


if __name__ == "__main__":
    main()
