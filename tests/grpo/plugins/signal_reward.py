"""Test rewards whose group variance the test chooses. ``signal_for`` gives the prompts whose referring
expression is in ``referrings`` rewards 0, 1, 0, 1, ... (a group of two or more has signal) and every
other prompt 0.5 for each completion (a zero-variance group, dropped by the filter)."""


def signal_for(completions, prompt, referrings=(), **kwargs):
    chosen = {f"detect {r} in this image" for r in referrings}
    values = [float(i % 2) if any(c in p for c in chosen) else 0.5 for i, p in enumerate(prompt)]
    return {"overall": values}
