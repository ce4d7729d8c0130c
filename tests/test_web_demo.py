"""The web demo's request -> answer function, without a browser: the streamed views, the answer equal
to the library's and to ``scripts/infer.py``'s, the trace as Markdown, and the messages for bad input.
The page itself, in a real headless Chromium: tests/test_web_demo_browser.py."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from rexthinker import web_demo
from rexthinker.data.synthref import generate, level_config
from rexthinker.detect import detector_by_name
from rexthinker.inference import Referrer, draw_result
from rexthinker.web_demo import InputError, answer, answer_record, trace_markdown

ROOT = Path(__file__).resolve().parents[1]
MAX_NEW_TOKENS = 24


@pytest.fixture(scope="module")
def referrer(tiny_model_path):
    return Referrer(tiny_model_path, "hf", max_new_tokens=MAX_NEW_TOKENS)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return web_demo.write_examples(tmp_path_factory.mktemp("examples"), count=3)


def test_examples_are_synthref_scenes_with_their_boxes_and_a_rejection(examples):
    assert len(examples) == 3
    for path, category, referring, boxes in examples:
        image = Image.open(path)
        assert category == "person" and referring
        assert all(0 <= box[0] < box[2] <= image.width and 0 <= box[1] < box[3] <= image.height for box in json.loads(boxes))
    assert all(Path(path).name.startswith("demo-synthref-test-") for path, *_ in examples)  # the demo level's scenes
    rejections = {s.referring for s in generate(12, seed=0, config=level_config("demo"), split="test") if s.is_rejection}
    assert examples[-1][2] in rejections


def test_answer_streams_the_trace_and_ends_with_the_librarys_answer(referrer, examples):
    path, category, referring, boxes = examples[0]
    views = list(answer(referrer, path, category, referring, boxes))
    first, *writing, last = views
    image = Image.open(path).convert("RGB")
    assert first.picture.size == image.size and f"{len(json.loads(boxes))} candidates" in first.status
    assert first.result is None and writing and all(v.result is None and "writing" in v.status for v in writing)
    library = referrer.refer(image, category, referring, json.loads(boxes))
    assert last.result.raw == library.raw and last.result.prompt == library.prompt
    shown = json.loads(last.answer)
    assert {k: v for k, v in shown.items() if k != "seconds"} == answer_record(library)
    assert shown["candidate_boxes"] == [[float(v) for v in box] for box in json.loads(boxes)]
    assert shown["seconds"] > 0 and f"{library.num_tokens} tokens" in last.status
    assert last.picture.size == draw_result(library, image).size  # both panels: candidates with verdicts, the answer
    assert last.trace == trace_markdown(library.raw)


def test_the_answer_equals_the_command_lines(referrer, examples, tmp_path):
    """scripts/infer.py and the page give the same completion and boxes for the same input (greedy)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import infer

    path, category, referring, boxes = examples[1]
    (tmp_path / "boxes.json").write_text(boxes)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        infer.main(["--model", referrer.model_path, "--image", path, "--category", category, "--referring", referring,
                    "--boxes", str(tmp_path / "boxes.json"), "--vis", str(tmp_path / "vis.png"), "--backend", "hf",
                    "--max-new-tokens", str(MAX_NEW_TOKENS)])  # fmt: skip
    printed = out.getvalue()
    (last,) = [v for v in answer(referrer, path, category, referring, boxes) if v.result is not None]
    assert printed.startswith(last.result.raw + "\n")
    shown = json.loads(last.answer)
    assert f"{len(shown['candidate_boxes'])} candidates: {json.dumps(shown['candidate_boxes'])}" in printed
    if shown["boxes"]:
        assert f"boxes (original pixels): {json.dumps(shown['boxes'])}" in printed


def test_the_status_line_names_the_answer_a_rejection_and_an_unfaithful_trace(referrer, examples):
    from rexthinker.contracts.answer import answer_json as fenced
    from rexthinker.generation import Generation
    from rexthinker.inference import interpret
    from rexthinker.prompts import prompt_boxes

    path, category, referring, boxes = examples[0]
    sample = referrer.query(Image.open(path), category, referring, json.loads(boxes))
    info = prompt_boxes(sample, 16 * 28 * 28, 1280 * 28 * 28)

    def status(think: str, answer: str) -> tuple[str, dict]:
        result = interpret(Generation(sample, info, "p", f"<think>{think}</think><answer>{answer}</answer>", 9))
        return web_demo.status_line(result, 1.25), json.loads(web_demo.answer_json(result, 1.25))

    line, shown = status("- Person 1: no → ❌", "None")
    assert line.startswith("🚫 **No match**") and shown["answer"] == "rejection" and shown["boxes"] == []
    line, shown = status("# Summarize\n- Person 2: yes → ✅", fenced([info.hint_boxes[1]], referring))
    assert line == "🎯 **Answer: Person 2**. 1.2 s, 9 tokens" and shown["candidates"] == [2] and shown["seconds"] == 1.25
    line, _ = status("# Summarize\n- Person 1: yes → ✅", fenced([info.hint_boxes[1]], referring))
    assert line.startswith("⚠️ **Answer: Person 2**") and "unfaithful" in line
    line, shown = status("hmm", "[{'bbox")
    assert line.startswith("❓ **The answer could not be read**") and shown["answer"] == "unreadable"


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "notes.png").write_text("this is not an image")
    Image.new("L", (6000, 4500)).save(folder / "huge.png")  # 27 MP, a few kB
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        (dict(image=None), "Upload an image"),
        (dict(image="notes.png"), "notes.png is not an image"),
        (dict(image="huge.png"), "6000 x 4500 pixels"),
        (dict(referring="   "), "Type a referring expression"),
        (dict(category=""), "Type the category"),
        (dict(boxes="[[1, 2, 3, 4]"), "not valid JSON"),
        (dict(boxes="[[1, 2, 3]]"), "must be a list of [x0, y0, x1, y1]"),
        (dict(boxes='{"person": [[1, 2, 3, 4]], "car": []}'), "must be a list of [x0, y0, x1, y1]"),
        (dict(boxes="[[30, 2, 10, 40]]"), "is empty"),
        (dict(boxes="[[3000, 2, 3010, 40]]"), "outside"),
        (dict(boxes=""), "started without a detector"),
    ],
)
def test_bad_input_gets_one_message_and_no_answer(referrer, examples, bad_files, case, message):
    path, category, referring, boxes = examples[0]
    request = dict(image=path, category=category, referring=referring, boxes=boxes) | case
    if request["image"] and not Path(request["image"]).is_absolute():
        request["image"] = str(bad_files / request["image"])
    views = list(answer(referrer, request["image"], request["category"], request["referring"], request["boxes"]))
    assert len(views) == 1 and views[0].picture is None and views[0].result is None
    assert message in views[0].status.replace("\\", "") and "Traceback" not in views[0].status  # Markdown, escaped
    with pytest.raises(InputError, match=message.split("[")[0]):
        web_demo.read_request(request["image"], request["category"], request["referring"], request["boxes"], None)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "*(no reasoning written"),
        ("\n\n\n", "*(no reasoning written"),
        ("<think>OK, the user needs us to detect <b>x</b>.\n- Step 1: find hats",
         "OK, the user needs us to detect \\<b\\>x\\</b\\>.  \n- Step 1: find hats"),
        ("<think># Step 1: find hats\n- Person 1: a hat → ⚠\n- Person 2: no hat → ❌",
         "#### Step 1: find hats\n\n- Person 1: a hat → ⚠\n- Person 2: no hat → ❌"),
        ("<think># Summarize and Re-Check answer\n- Person 1: hat → ✅</think><answer>None</answer>",
         "#### Summarize and Re-Check answer\n\n- Person 1: hat → ✅\n\n#### Answer\n\n~~~~\n<answer>None</answer>\n~~~~"),
    ],
)  # fmt: skip
def test_trace_markdown(text, expected):
    assert trace_markdown(text).startswith(expected) if expected.startswith("*(") else trace_markdown(text) == expected


def test_the_page_says_when_it_listens_beyond_this_machine():
    assert web_demo.is_loopback("127.0.0.1") and web_demo.is_loopback("localhost") and web_demo.is_loopback("::1")
    assert not web_demo.is_loopback("0.0.0.0") and not web_demo.is_loopback("192.168.1.4")
    assert "listens on" not in web_demo.header("m", "hf", None, "127.0.0.1", 7860)
    assert "listens on 0.0.0.0:7861" in web_demo.header("m", "hf", "tiny", "0.0.0.0", 7861)


def test_the_command_line_listens_on_loopback_unless_told(monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    import web_demo as script

    assert script.parse_args(["--model", "tiny"]).host == "127.0.0.1"
    assert script.parse_args(["--model", "tiny", "--host", "0.0.0.0"]).host == "0.0.0.0"
    assert script.resolve_model("tiny") == str(__import__("rexthinker.models.tiny", fromlist=["get"]).get("tiny"))
    assert script.resolve_model("outputs/some/folder") == "outputs/some/folder"


def test_a_stream_closed_early_ends_its_generation(tiny_model_path, examples, monkeypatch):
    import threading

    from rexthinker import inference

    stopped = []

    def spy(*args, **kwargs):
        try:
            return generate(*args, **kwargs)
        except RuntimeError as err:
            stopped.append(str(err))
            raise

    generate = inference.hf_generate
    monkeypatch.setattr(inference, "hf_generate", spy)
    referrer = Referrer(tiny_model_path, "hf", max_new_tokens=2000)  # seconds of work: closing comes first
    path, category, referring, boxes = examples[0]
    stream = referrer.stream(Image.open(path), category, referring, json.loads(boxes))
    text, result = next(stream)
    assert result is None and text
    stream.close()  # as when the page is closed mid-answer
    assert stopped == ["the stream's reader stopped listening"]
    assert not [t for t in threading.enumerate() if t.name == "rexthinker-stream"]
    referrer.max_new_tokens = 30
    *_, (text, result) = referrer.stream(Image.open(path), category, referring, json.loads(boxes))
    assert result is not None and result.num_tokens == 30 and text == result.raw


def test_without_pasted_boxes_the_detector_proposes_them(referrer, examples):
    detector = detector_by_name("tiny")
    path, category, referring, _ = examples[0]
    views = list(answer(referrer, path, category, referring, "", detector))
    proposed = detector.detect(Image.open(path).convert("RGB"), category)
    found = f"{len(proposed)} candidate" if proposed else "no person found by the detector"
    assert found in views[0].status and views[-1].result is not None
    assert json.loads(views[-1].answer)["candidate_boxes"] == web_demo._rounded(proposed)


def test_a_qwen3_vl_checkpoint_is_served_at_its_familys_pixel_limits(examples):
    """scripts/web_demo.py passes no pixel limits unless given, so the page feeds a Qwen3-VL checkpoint
    at Qwen3-VL's (32 x 32-pixel tokens) and writes its hints in 0-1000."""
    from rexthinker.coords import RELATIVE_1000, model_frame_size
    from rexthinker.models import tiny
    from rexthinker.models.families import QWEN3_VL

    sys.path.insert(0, str(ROOT / "scripts"))
    import web_demo as cli

    args = cli.parse_args(["--model", "tiny"])
    assert args.min_pixels is None and args.max_pixels is None
    referrer = Referrer(tiny.get("tiny", "qwen3_vl"), "hf", min_pixels=args.min_pixels, max_pixels=args.max_pixels, max_new_tokens=4)
    path, category, referring, boxes = examples[0]
    last = list(answer(referrer, path, category, referring, boxes))[-1]
    size = Image.open(path).size
    assert last.result.info.model_size == model_frame_size(*size, *QWEN3_VL.train_pixels, factor=32)
    assert last.result.info.frame.kind == RELATIVE_1000
    assert last.result.raw == referrer.refer(Image.open(path).convert("RGB"), category, referring, json.loads(boxes)).raw
