"""Print the software stack and devices, for bug reports: ``python -m rexthinker.env``."""

from __future__ import annotations

import importlib
import os
import platform
import sys

PACKAGES = (
    "rexthinker", "torch", "torchvision", "transformers", "tokenizers", "vllm", "trl", "ray", "deepspeed",
    "datasets", "accelerate", "qwen_vl_utils", "pyarrow", "PIL", "numpy", "wandb",
)  # fmt: skip


def probe(module: str) -> str:
    """The module's version, or why it does not import (first line of the error)."""
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # any import failure is worth reporting, not raising
        return f"NOT IMPORTABLE ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return str(getattr(mod, "__version__", "installed"))


def report() -> list[tuple[str, str]]:
    rows = [("python", sys.version.split()[0]), ("platform", platform.platform()), ("cpus", str(os.cpu_count()))]
    rows += [(name, probe(name)) for name in PACKAGES]
    try:
        import torch

        rows.append(("cuda", f"{torch.cuda.is_available()} (build {torch.version.cuda})"))
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            rows.append((f"gpu{i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB"))
    except Exception as exc:
        rows.append(("cuda", f"unknown ({exc})"))
    return rows


def main() -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not _has_cuda() else "cuda")
    rows = report()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


if __name__ == "__main__":
    main()
