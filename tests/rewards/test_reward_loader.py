"""The reward loader, rexthinker.rewards: start-up errors, calling convention, failure isolation, pickling."""

from __future__ import annotations

import pickle
import textwrap

import pytest

from rexthinker.rewards import BATCH_KEYS, RewardFailedError, RewardLoadError, RewardOutputError, load_reward
from tests.rewards.helpers import ROOT, completion, fenced

BATCH = {
    "solution_boxes": [[[0, 0, 10, 10]], []],
    "hint_boxes": [[[0, 0, 10, 10]], [[5, 5, 9, 9]]],
    "category": ["person", "person"],
    "domain": ["attribute", "rejection"],
    "image_size": [(640, 480), (640, 480)],
    "prompt": ["p1", "p2"],
}
TEXTS = [completion(fenced([0, 0, 10, 10])), completion("None")]


@pytest.fixture
def write(tmp_path):
    def write(source: str, name: str = "reward.py") -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return str(path)

    return write


LOAD_ERRORS = {
    "no colon": ("{dir}/reward.py", "must look like"),
    "not a python file": ("{dir}/reward.txt:f", "must name a .py file"),
    "missing file": ("{dir}/missing.py:f", "not found"),
    "missing function": ("{file}:nope", "has no 'nope'; callables defined there: \\['f'\\]"),
    "not callable": ("{file}:CONSTANT", "not a function or class"),
    "not an identifier": ("{file}:f()", "must look like"),
}


@pytest.mark.parametrize("spec, message", LOAD_ERRORS.values(), ids=LOAD_ERRORS.keys())
def test_bad_specs_fail_at_load(write, tmp_path, spec, message):
    file = write("CONSTANT = 3\ndef f(completions, **kwargs):\n    return {'overall': [0.0] * len(completions)}\n")
    (tmp_path / "reward.txt").write_text("")
    with pytest.raises(RewardLoadError, match=message):
        load_reward(spec.format(dir=tmp_path, file=file))


def test_example_rejects_bad_parameters_at_load():
    with pytest.raises(RewardLoadError, match="ValueError: need max_chars > 0"):
        load_reward(f"{ROOT}/rewards/examples/length_penalty.py:LengthPenalty", max_chars=0)


def test_import_failure_is_a_load_error(write):
    file = write("import not_a_module_anywhere\n")
    with pytest.raises(RewardLoadError, match="importing .* failed: ModuleNotFoundError"):
        load_reward(f"{file}:f")


SIGNATURES = {
    "per-sample style": ("def f(completion, solution):", {}, "'solution' is neither a batch key"),
    "no positional slot": ("def f(*, completions):", {}, "first parameter must take the list of completions"),
    "nothing at all": ("def f():", {}, "first parameter"),
    "unknown config key": ("def f(completions, solution_boxes):", {"weight": 1}, "no parameters \\['weight'\\]"),
    "config shadows a batch key": ("def f(completions, **kwargs):", {"domain": "x"}, "batch keys the trainer fills in"),
    "positional-only batch key": ("def f(completions, solution_boxes, /):", {}, "positional-only"),
}


@pytest.mark.parametrize("header, config, message", SIGNATURES.values(), ids=SIGNATURES.keys())
def test_signatures_that_cannot_take_a_batch(write, header, config, message):
    file = write(f"{header}\n    return {{'overall': []}}\n")
    with pytest.raises(RewardLoadError, match=message):
        load_reward(f"{file}:f", **config)


def test_class_with_bad_config(write):
    file = write(
        """
        class R:
            def __init__(self, scale=1.0):
                self.scale = scale

            def __call__(self, completions, **kw):
                return [self.scale] * len(completions)
        """
    )
    with pytest.raises(RewardLoadError, match="building the reward with config .* failed: TypeError"):
        load_reward(f"{file}:R", colour="red")
    assert load_reward(f"{file}:R", scale=0.5)(TEXTS, **BATCH) == {"overall": [0.5, 0.5]}


def test_a_function_gets_only_the_keys_it_names_plus_config(write):
    file = write(
        """
        def f(completions, solution_boxes, *, bonus=0.0):
            return {"overall": [len(b) + bonus for b in solution_boxes]}

        def g(completions, **kwargs):
            return {"overall": [float(len(kwargs))] * len(completions)}
        """
    )
    assert load_reward(f"{file}:f", bonus=0.5)(TEXTS, **BATCH, extra=[1, 2]) == {"overall": [1.5, 0.5]}
    assert load_reward(f"{file}:g", colour="red")(TEXTS, **BATCH) == {"overall": [float(len(BATCH) + 1)] * 2}


OUTPUTS = {
    "dict of lists": ("{'overall': [1, 0], 'x': (0.5, 0.25)}", {"overall": [1.0, 0.0], "x": [0.5, 0.25]}),
    "list of dicts (EasyR1)": ("[{'overall': 1, 'x': 2}, {'x': 3, 'overall': 0}]", {"overall": [1.0, 0.0], "x": [2.0, 3.0]}),
    "list of floats": ("[0.5, 1]", {"overall": [0.5, 1.0]}),
    "numpy vector": ("__import__('numpy').array([0.5, 1.0])", {"overall": [0.5, 1.0]}),
    "dict of numpy vectors": ("{'overall': __import__('numpy').array([0.5, 1.0])}", {"overall": [0.5, 1.0]}),
}


@pytest.mark.parametrize("result, expected", OUTPUTS.values(), ids=OUTPUTS.keys())
def test_accepted_result_shapes(write, result, expected):
    file = write(f"def f(completions, **kwargs):\n    return {result}\n")
    assert load_reward(f"{file}:f")(TEXTS, **BATCH) == expected


BAD_OUTPUTS = {
    "no overall": "{'accuracy': [1, 0]}",
    "wrong length": "{'overall': [1]}",
    "strings": "{'overall': ['1', '0']}",
    "per-sample dicts with different keys": "[{'overall': 1}, {'overall': 0, 'x': 1}]",
    "a scalar": "1.0",
}


@pytest.mark.parametrize("result", BAD_OUTPUTS.values(), ids=BAD_OUTPUTS.keys())
def test_wrong_shapes_always_raise(write, result):
    file = write(f"def f(completions, **kwargs):\n    return {result}\n")
    with pytest.raises(RewardOutputError):
        load_reward(f"{file}:f")(TEXTS, **BATCH)


FRAGILE = """
def f(completions, domain, **kwargs):
    scores = []
    for text, d in zip(completions, domain):
        if d == "rejection":
            raise KeyError("no rule for rejection samples")
        scores.append(0.75)
    return {"overall": scores, "accuracy": [1.0] * len(scores)}

def nan(completions, domain, **kwargs):
    return {"overall": [float("nan") if d == "rejection" else 0.5 for d in domain]}
"""


def test_a_sample_that_raises_scores_zero_and_is_reported(write, caplog):
    reward = load_reward(f"{write(FRAGILE)}:f")
    assert reward(TEXTS, **BATCH) == {"overall": [0.75, 0.0], "accuracy": [1.0, 0.0]}
    assert reward(TEXTS, **BATCH)["overall"] == [0.75, 0.0]
    assert reward.errors.failed == 2
    assert "KeyError: 'no rule for rejection samples'" in reward.errors.first_traceback
    assert "2 samples failed" in str(reward.errors)
    assert sum("failed on a sample" in r.message for r in caplog.records) == 1  # logged once


def test_a_batch_of_one_failing_sample_scores_zero(write):
    reward = load_reward(f"{write(FRAGILE)}:f")
    assert reward(TEXTS[1:], **{k: v[1:] for k, v in BATCH.items()}) == {"overall": [0.0]}
    assert reward.errors.failed == 1


def test_a_reward_failing_on_every_sample_is_broken(write):
    reward = load_reward(f"{write(FRAGILE)}:f")
    with pytest.raises(RewardFailedError, match="failed on all 2 samples"):
        reward(TEXTS, **{**BATCH, "domain": ["rejection", "rejection"]})
    default = load_reward(f"{ROOT}/rewards/referring.py:compute_score", faithfulness_weight=0.2)
    with pytest.raises(RewardFailedError, match="neither hint_boxes nor prompt"):
        default(TEXTS, solution_boxes=BATCH["solution_boxes"])  # a misconfigured run stops, it does not train on zeros


def test_a_missing_required_batch_key(write):
    reward = load_reward(f"{write(FRAGILE)}:f")
    with pytest.raises(TypeError, match=r"needs batch keys \['domain'\]"):
        reward(TEXTS, solution_boxes=BATCH["solution_boxes"])


def test_strict_mode_raises(write):
    reward = load_reward(f"{write(FRAGILE)}:f", strict=True)
    with pytest.raises(KeyError):
        reward(TEXTS, **BATCH)


def test_non_finite_scores(write):
    file = write(FRAGILE)
    reward = load_reward(f"{file}:nan")
    assert reward(TEXTS, **BATCH) == {"overall": [0.5, 0.0]}
    assert reward.errors.failed == 1 and "non-finite" in reward.errors.first_traceback
    with pytest.raises(RewardOutputError, match="non-finite"):
        load_reward(f"{file}:nan", strict=True)(TEXTS, **BATCH)
    with pytest.raises(RewardFailedError, match="non-finite score for all 2"):
        reward(TEXTS, **{**BATCH, "domain": ["rejection", "rejection"]})


def test_misaligned_batch(write):
    reward = load_reward(f"{write(FRAGILE)}:f")
    with pytest.raises(ValueError, match="'domain' has 1 entries for 2"):
        reward(TEXTS, domain=["x"])


def test_pickles_and_reloads_from_the_file(write):
    file = write(
        """
        import math

        class Scaled:
            def __init__(self, scale):
                self.scale = scale

            def __call__(self, completions, **kwargs):
                return {"overall": [self.scale * math.tanh(len(c)) for c in completions]}
        """
    )
    reward = load_reward(f"{file}:Scaled", scale=0.5)
    clone = pickle.loads(pickle.dumps(reward))
    assert clone(TEXTS, **BATCH) == reward(TEXTS, **BATCH)
    assert (clone.spec, clone.config, clone.strict) == (reward.spec, {"scale": 0.5}, False)

    default = load_reward(f"{ROOT}/rewards/referring.py:compute_score", iou_threshold=0.7)
    assert pickle.loads(pickle.dumps(default))(TEXTS, **BATCH) == default(TEXTS, **BATCH)


def test_an_edited_file_is_refused_on_unpickling(write):
    file = write(FRAGILE)
    payload = pickle.dumps(load_reward(f"{file}:f"))
    write(FRAGILE + "\n# edited\n")
    with pytest.raises(RewardLoadError, match="changed since"):
        pickle.loads(payload)


def test_files_with_the_same_name_do_not_clash(tmp_path):
    for d, value in (("a", 1.0), ("b", 2.0)):
        (tmp_path / d).mkdir()
        (tmp_path / d / "reward.py").write_text(f"def f(completions, **kw):\n    return [{value}] * len(completions)\n")
    a, b = load_reward(f"{tmp_path}/a/reward.py:f"), load_reward(f"{tmp_path}/b/reward.py:f")
    assert a(TEXTS)["overall"] == [1.0, 1.0] and b(TEXTS)["overall"] == [2.0, 2.0]


def test_the_batch_keys_are_the_trainers():
    assert BATCH_KEYS == tuple(BATCH)


def test_worked_example_length_penalty():
    reward = load_reward(f"{ROOT}/rewards/examples/length_penalty.py:LengthPenalty", max_chars=200, penalty=0.5)
    short = completion(fenced([0, 0, 10, 10]), think="Person 1.")
    long = completion(fenced([0, 0, 10, 10]), think="Person 1." + "x" * (300 - len(short)))
    assert len(short) < 200 and len(long) == 300
    gt = [[[0, 0, 10, 10]]] * 2
    scores = reward([short, long], solution_boxes=gt)
    assert scores["length"] == pytest.approx([1.0, 0.5])  # 100 characters over a budget of 200
    assert scores["overall"] == pytest.approx([1.0, 0.75])
    assert scores["accuracy"] == [1.0, 1.0]
    assert pickle.loads(pickle.dumps(reward))([short, long], solution_boxes=gt) == scores


def test_readme_example_prints_what_it_says():
    text = (
        "<think>Person 1 is the man on the left \u2192 \u2705</think>"
        '<answer>```json\n[{"bbox_2d": [10, 20, 110, 220], "label": "man"}]\n```</answer>'
    )
    reward = load_reward(f"{ROOT}/rewards/examples/length_penalty.py:LengthPenalty", max_chars=1500)
    printed = str(reward([text], solution_boxes=[[[10, 20, 110, 220]]]))
    assert f"# {printed}" in (ROOT / "rewards/README.md").read_text()
