"""Test rewards. ``length_score`` varies with the completion, so a random policy gets non-zero
advantages; ``Flaky`` raises on some samples; ``broken`` raises on every sample."""


def length_score(completions, **kwargs):
    values = [min(1.0, len(text) / 40.0) for text in completions]
    return {"overall": values, "length": values}


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
