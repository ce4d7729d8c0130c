"""Ask a checkpoint one referring question about one image; print its reasoning and answer, and
save a picture of them.

    # candidates from a detector (Grounding DINO through transformers; a hub id or a folder)
    python scripts/infer.py --model IDEA-Research/Rex-Thinker-GRPO-7B --image demo.png \\
        --category helmet --referring "the fourth helmet from left" \\
        --detector IDEA-Research/grounding-dino-base --vis vis/helmet.png

    # candidates from a JSON file: [[x0, y0, x1, y1], ...] or {"person": [[x0, y0, x1, y1], ...]}
    python scripts/infer.py --model outputs/demo/sft/final --image scene.png --category person \\
        --referring "the person in a red shirt" --boxes boxes.json --vis /tmp/answer.png --backend hf

    # a smoke run with the tiny test model and the tiny random detector (the answer is noise)
    python scripts/infer.py --model "$(python -m rexthinker.models.tiny tiny)" --image scene.png \\
        --category person --referring "the tallest person" --detector tiny --vis /tmp/tiny.png --backend hf

Prints the completion as the model wrote it (``<think>...</think><answer>...</answer>``), then the
answer read back: the candidates it picked ("Person k") and its boxes in the image's own pixels.
The picture (``--vis``) shows the numbered candidates with the summary's ✅/❌ verdicts on the
left and the predicted boxes on the right, with the summary lines below; unlike the reference
tool it draws the marks (as vector shapes) and scales labels to the image.

Defaults are the reference demo's: the training user text, THINK_PROMPT as the system message,
pixel limits of 16 .. 1280 image tokens (16*28*28 .. 1280*28*28 for Qwen2.5-VL, 16*32*32 ..
1280*32*32 for Qwen3-VL and Qwen3.5: the checkpoint's family decides), greedy decoding; the vLLM backend.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

PIXELS_HELP = "image pixel limit (default: the checkpoint family's training limit, 16 / 1280 image tokens)"

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--image", required=True)
    p.add_argument("--category", default="person", help="what the candidates are (the hint's key)")
    p.add_argument("--referring", required=True, help="the referring expression")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--boxes", help="JSON file with the candidate boxes in original pixels")
    where.add_argument("--detector", help="'tiny' (random test detector) or a Grounding DINO hub id / folder")
    p.add_argument("--vis", required=True, help="where to save the picture (PNG)")
    p.add_argument("--backend", choices=("vllm", "hf"), default="vllm")
    p.add_argument("--template", choices=("train", "humanref_eval"), default="train", help="user text variant")
    p.add_argument("--min-pixels", type=int, help=PIXELS_HELP)
    p.add_argument("--max-pixels", type=int, help=PIXELS_HELP)
    p.add_argument("--max-new-tokens", type=int, default=2048)
    return p.parse_args(argv)


def _boxes(boxes) -> str:
    return json.dumps([[round(v, 1) for v in box] for box in boxes])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from rexthinker.detect import detector_by_name
    from rexthinker.inference import Referrer, draw_result, read_boxes_file

    image = Image.open(args.image).convert("RGB")
    boxes = read_boxes_file(args.boxes) if args.boxes else detector_by_name(args.detector)
    referrer = Referrer(
        args.model, args.backend, template=args.template, min_pixels=args.min_pixels, max_pixels=args.max_pixels,
        max_new_tokens=args.max_new_tokens,
    )  # fmt: skip
    result = referrer.refer(image, args.category, args.referring, boxes)

    print(result.raw)
    print()
    word = args.category.capitalize()
    print(f"{len(result.candidates_original)} candidates: {_boxes(result.candidates_original)}")
    if not result.completion.answer.ok:
        print("answer: unreadable (" + "; ".join(result.completion.answer.problems) + ")")
    elif result.is_rejection:
        print("answer: none (the model rejects the expression)")
    else:
        names = [f"{word} {k}" if k is not None else "a box that is no candidate" for k in result.answer_candidates]
        print("answer: " + ", ".join(names))
        print(f"boxes (original pixels): {_boxes(result.answer_boxes_original)}")
    if result.unfaithful:
        print("note: the summary's ✅ set differs from the answer (unfaithful trace)")
    picture = draw_result(result, image)
    Path(args.vis).parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.vis, format="PNG")
    print(f"saved {args.vis} ({picture.width}x{picture.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
