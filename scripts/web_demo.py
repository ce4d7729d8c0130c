"""Serve the web demo: a page where a person uploads an image, types what to find and watches the
model reason its way to the boxes (Gradio; see :mod:`rexthinker.web_demo`).

    # a trained checkpoint (any folder scripts/convert_checkpoint.py writes, or a hub id), boxes from a detector
    python scripts/web_demo.py --model outputs/demo/sft/final --detector IDEA-Research/grounding-dino-base

    # the tiny test model and the tiny random detector: runs on any CPU in seconds (the answers are noise)
    python scripts/web_demo.py --model tiny --detector tiny

Serves on http://127.0.0.1:7860 only; ``--host 0.0.0.0`` listens on every interface, and the page
then says so. Unlike the reference demo it streams the reasoning as it is written, shows the
candidates' ✅ / ❌ verdicts on the picture, gives the answer as JSON in the image's own pixels, and
answers bad input (a non-image, an empty expression, malformed boxes, a huge image) with a message.
The hf backend (the default here) streams; ``--backend vllm`` shows the finished answer at once.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PIXELS_HELP = "image pixel limit (default: the checkpoint family's training limit, 16 / 1280 image tokens)"

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder or hub id, or a tiny model's name ('tiny', 'small')")
    p.add_argument("--detector", help="'tiny' (random test detector) or a Grounding DINO hub id / folder; without it, boxes are pasted")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf", help="hf streams the trace; vllm answers at once")
    p.add_argument("--template", choices=("train", "humanref_eval"), default="train", help="user text variant")
    p.add_argument("--min-pixels", type=int, help=PIXELS_HELP)
    p.add_argument("--max-pixels", type=int, help=PIXELS_HELP)
    p.add_argument("--max-new-tokens", type=int, default=2048)
    p.add_argument("--examples", type=int, default=4, help="how many SynthRef scenes to offer as examples")
    return p.parse_args(argv)


def resolve_model(name: str) -> str:
    """A tiny model's name (built and cached on first use), else the folder or hub id as given."""
    from rexthinker.models import tiny

    return str(tiny.get(name)) if name in tiny.SPECS and not Path(name).exists() else name


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from rexthinker import web_demo
    from rexthinker.detect import detector_by_name
    from rexthinker.inference import Referrer

    referrer = Referrer(
        resolve_model(args.model), args.backend, template=args.template, min_pixels=args.min_pixels,
        max_pixels=args.max_pixels, max_new_tokens=args.max_new_tokens,
    )  # fmt: skip
    detector = detector_by_name(args.detector) if args.detector else None
    folder = Path(tempfile.mkdtemp(prefix="rexthinker-web-demo-"))
    examples = web_demo.write_examples(folder, args.examples) if args.examples else []
    app = web_demo.build_app(referrer, detector=detector, detector_name=args.detector, examples=examples, host=args.host, port=args.port)
    print(f"web demo: http://{args.host}:{args.port}  (model {referrer.model_path}, {args.backend} backend)", flush=True)
    web_demo.launch(app, args.host, args.port, allowed_paths=[folder])
    return 0


if __name__ == "__main__":
    sys.exit(main())
