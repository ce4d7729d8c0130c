"""Test rewards. ``length_score`` varies with the completion, so a random policy gets non-zero
advantages; ``relative_length_score`` is the same, but refuses boxes outside the 0-1000 frame;
``Flaky`` raises on some samples; ``broken`` raises on every sample."""


def length_score(completions, **kwargs):
    values = [min(1.0, len(text) / 40.0) for text in completions]
    return {"overall": values, "length": values}


def relative_length_score(completions, solution_boxes, hint_boxes, image_size, **kwargs):
    """``length_score`` for a Qwen3-VL run: every box the reward is given must be in 0-1000."""
    boxes = [v for rows in (*solution_boxes, *hint_boxes) for box in rows for v in box]
    if any(tuple(size) != (1000, 1000) for size in image_size) or not 0 <= min(boxes, default=0) <= max(boxes, default=0) <= 1000:
        raise ValueError(f"boxes not in the 0-1000 frame: image_size {image_size[0]}, boxes {boxes[:8]}")
    return length_score(completions)


class Flaky:
    """Raises on every batch of several completions and on every second single completion, so the
    loader's per-sample retry scores some samples and reports the others."""

    def __init__(self):
        self.calls = 0

    def __call__(self, completions, **kwargs):
        self.calls += 1
        if len(completions) > 1 or self.calls % 2 == 0:
            raise ValueError(f"cannot score this batch (call {self.calls})")
        return {"overall": [min(1.0, len(text) / 40.0) for text in completions]}


def broken(completions, **kwargs):
    raise RuntimeError("this reward is broken")
