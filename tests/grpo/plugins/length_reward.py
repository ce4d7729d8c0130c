"""Test rewards. ``length_score`` varies with the completion, so a random policy gets non-zero
advantages; ``flaky`` raises on some samples; ``broken`` raises on every sample."""


def length_score(completions, **kwargs):
    values = [min(1.0, len(text) / 40.0) for text in completions]
    return {"overall": values, "length": values}


def flaky(completions, **kwargs):
    out = []
    for text in completions:
        if len(text) % 3 == 0:
            raise ValueError(f"cannot score a completion of {len(text)} characters")
        out.append(min(1.0, len(text) / 40.0))
    return {"overall": out}


def broken(completions, **kwargs):
    raise RuntimeError("this reward is broken")
