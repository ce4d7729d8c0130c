"""Shared fixtures: the cached tiny checkpoint and one in-process vLLM engine for the whole session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def tiny_model_path():
    from rexthinker.models import tiny

    return tiny.get("tiny")


@pytest.fixture(scope="session")
def tiny_vllm(tiny_model_path):
    """An fp32 vLLM engine on the tiny checkpoint, shared by every test that needs one."""
    from rexthinker.generation import new_engine

    llm = new_engine(str(tiny_model_path), dtype="float32", max_model_len=2048, enforce_eager=True, extra={"max_num_seqs": 8})
    yield llm
    del llm
