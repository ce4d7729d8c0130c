"""scripts/convert_checkpoint.py: round trips from every input layout with exact tensors and logit
parity, strict names (missing or extra tensors fail), dtype kept or cast, sharded output, the model
card, a private hub upload by default, and a vLLM load."""

from __future__ import annotations

import json
import shutil
import socket
from unittest import mock

import pytest
import torch
from safetensors import safe_open

from rexthinker.convert import ConversionError, card, convert, push_to_hub
from rexthinker.convert.keys import layout_rules, rename
from rexthinker.convert.pipeline import settle_dtype
from rexthinker.convert.reference import Placement, infer_placement
from rexthinker.models.families import FRAME_FILE, QWEN2_5_VL, QWEN3_5, QWEN3_VL, FrameMismatchError, record_frame
from scripts.convert_checkpoint import main as cli
from tests.scripts.helpers import config_dtype, stored_tensors


def assert_same(got: dict, want: dict, dtype=torch.float32) -> None:
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert got[name].dtype == dtype, name
        assert torch.equal(got[name], tensor.to(dtype)), name


# --- tables -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layout, source, model_name",
    [
        ("hf", "visual.blocks.0.attn.qkv.weight", "model.visual.blocks.0.attn.qkv.weight"),
        ("hf", "model.layers.1.mlp.up_proj.weight", "model.language_model.layers.1.mlp.up_proj.weight"),
        ("hf", "model.embed_tokens.weight", "model.language_model.embed_tokens.weight"),
        ("hf", "model.language_model.norm.weight", "model.language_model.norm.weight"),
        ("hf", "model.visual.merger.ln_q.weight", "model.visual.merger.ln_q.weight"),
        ("hf", "lm_head.weight", "lm_head.weight"),
        ("reference", "_fsdp_wrapped_module.model.layers.0.self_attn.q_proj.bias", "model.language_model.layers.0.self_attn.q_proj.bias"),
        ("reference", "visual._fsdp_wrapped_module.blocks.0.norm1.weight", "model.visual.blocks.0.norm1.weight"),
        ("reference", "model.layers.0._checkpoint_wrapped_module.mlp.up_proj.weight", "model.language_model.layers.0.mlp.up_proj.weight"),
        ("learner", "model.language_model.layers.0.input_layernorm.weight", "model.language_model.layers.0.input_layernorm.weight"),
        ("deepspeed", "model.visual.patch_embed.proj.weight", "model.visual.patch_embed.proj.weight"),
    ],
)  # fmt: skip
def test_rename_tables(layout, source, model_name):
    assert rename(source, layout_rules(QWEN2_5_VL, layout)) == model_name


@pytest.mark.parametrize(
    "family, layout, name",
    [
        (QWEN3_VL, "hf", "model.language_model.layers.1.mlp.up_proj.weight"),
        (QWEN3_VL, "hf", "model.visual.deepstack_merger_list.0.linear_fc1.weight"),
        (QWEN3_VL, "learner", "model.language_model.embed_tokens.weight"),
        (QWEN3_5, "hf", "model.language_model.layers.0.linear_attn.A_log"),
        (QWEN3_5, "hf", "model.visual.merger.linear_fc2.weight"),
        (QWEN3_5, "deepspeed", "lm_head.weight"),
    ],
)  # fmt: skip
def test_the_qwen3_families_keep_their_names_on_disk(family, layout, name):
    """Released, saved and trained alike under the nested names: Qwen2.5-VL's on-disk rules would be a
    no-op on them, but each family has its own table, and no reference-trainer layout (Qwen2.5-VL only)."""
    assert rename(name, layout_rules(family, layout)) == name
    with pytest.raises(ConversionError, match=f"no 'reference' layout for {family.name} checkpoints"):
        layout_rules(family, "reference")


@pytest.mark.parametrize(
    "full, local, placement",
    [
        ((4, 6), [(4, 6), (4, 6)], Placement("replicate")),
        ((4, 6), [(2, 6), (2, 6)], Placement("shard", 0)),
        ((4, 6), [(4, 3), (4, 3)], Placement("shard", 1)),
        ((717, 64), [(359, 64), (358, 64)], Placement("shard", 0)),  # uneven split
        ((6,), [(3,), (3,)], Placement("shard", 0)),
        ((4, 6), [(2, 6), (4, 3)], None),  # ranks disagree on the dimension
        ((4, 6), [(2, 6), (1, 6)], None),  # slices do not add up
        ((4, 6), [(2, 3), (2, 3)], None),  # two dimensions differ
        ((4, 6), [(24,), (24,)], None),  # flattened shards carry no shape to place them by
    ],
)  # fmt: skip
def test_shard_placement_is_read_from_shapes(full, local, placement):
    assert infer_placement(torch.Size(full), [torch.Size(s) for s in local]) == placement


@pytest.mark.parametrize(
    "dtypes, settled, note",
    [
        ([torch.float32, torch.float32], torch.float32, None),
        ([torch.bfloat16, torch.bfloat16, torch.int64], torch.bfloat16, None),  # integer tensors do not count
        ([torch.float32, torch.bfloat16], torch.float32, "source mixes dtypes (1 float32, 1 bfloat16)"),
        ([torch.bfloat16, torch.float16], torch.float32, "widened to float32"),
    ],
)  # fmt: skip
def test_source_dtype_is_kept_and_a_mix_widens_losslessly(dtypes, settled, note):
    dtype, message = settle_dtype({f"t{i}": torch.zeros(2, dtype=d) for i, d in enumerate(dtypes)})
    assert dtype == settled
    assert (message is None) if note is None else (note in message)


# --- round trips --------------------------------------------------------------------------------
def test_hf_folder_round_trip(tiny_model_path, tmp_path):
    report = convert(tiny_model_path, tmp_path / "out")
    out = tmp_path / "out"
    assert report.layout == "hf" and report.dtype_out == "float32" and report.max_logit_diff == 0.0
    assert_same(stored_tensors(out), stored_tensors(tiny_model_path))
    for name in ("config.json", "generation_config.json", "chat_template.jinja", "tokenizer.json", "processor_config.json", "README.md"):
        assert (out / name).is_file(), name
    assert json.loads((out / FRAME_FILE).read_text()) == {"family": "qwen2_5_vl", "frame": "model_pixels"}
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("family", [QWEN3_VL, QWEN3_5], ids=lambda f: f.name)
def test_qwen3_family_round_trips(family, sft_rows, tmp_path):
    """Convert, load, compare, from a Hugging Face folder and from a one-step SFT run's learner.pt: the
    same tensor names (the nested ones, on disk too) and values, the logits of the written model equal
    the source's, and the frame is recorded."""
    from rexthinker.config import load_config
    from rexthinker.models import tiny
    from rexthinker.sft.config import SFTConfig
    from rexthinker.sft.trainer import SFTTrainer
    from tests.scripts.conftest import _overrides

    source = tiny.get("tiny", family.name)
    report = convert(source, tmp_path / "out")
    out = tmp_path / "out"
    assert report.layout == "hf" and report.dtype_out == "float32" and report.max_logit_diff == 0.0
    assert_same(stored_tensors(out), stored_tensors(source))
    with safe_open(str(source / "model.safetensors"), "pt") as a, safe_open(str(out / "model.safetensors"), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
    assert json.loads((out / FRAME_FILE).read_text()) == {"family": family.name, "frame": "relative_1000"}
    assert (out / "chat_template.jinja").read_text() == (source / "chat_template.jinja").read_text()

    run = SFTTrainer(load_config(SFTConfig, "recipes/configs/sft_demo.yaml",
                                 _overrides(source, sft_rows, tmp_path / "run") + ["learner.strategy=single"]))  # fmt: skip
    try:
        run.fit()
        run.finish()
    finally:
        run.cleanup()
    step = tmp_path / "run" / "checkpoints" / "step-1"
    report = convert(step, tmp_path / "from_learner", layout="learner")
    assert report.layout == "learner" and report.max_logit_diff == 0.0
    trained = stored_tensors(step / "hf")
    assert_same(stored_tensors(tmp_path / "from_learner"), trained)
    assert not all(torch.equal(trained[k], v) for k, v in stored_tensors(source).items())  # the step trained


def test_a_source_recording_another_frame_than_its_family_is_refused(tiny_model_path, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_model_path, source)
    record_frame(source, QWEN3_VL)
    with pytest.raises(FrameMismatchError, match="records box frame 'relative_1000'"):
        convert(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "where, layout, detected",
    [
        ("checkpoints/step-1", None, "hf"),
        ("checkpoints/step-1", "learner", "learner"),
        ("checkpoints/step-1/learner", None, "learner"),
        ("final", None, "hf"),
    ],
)  # fmt: skip
def test_single_process_checkpoint_round_trip(single_run, tmp_path, where, layout, detected):
    report = convert(single_run / where, tmp_path / "out", layout=layout)
    assert report.layout == detected and report.max_logit_diff == 0.0
    trained = stored_tensors(single_run / "checkpoints/step-1/hf")
    assert_same(stored_tensors(tmp_path / "out"), trained)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "| Training stage | SFT" in readme and "| Steps | 1 of 1 |" in readme
    assert "No evaluation result was found" in readme  # the run wrote no eval.json


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_deepspeed_states_round_trip(deepspeed_runs, tiny_model_path, tmp_path, strategy, capsys):
    step = deepspeed_runs[strategy] / "checkpoints/step-1"
    code = cli([str(step / "learner"), "--out", str(tmp_path / "out")])  # detected from the folder
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "deepspeed layout" in printed and f"ZeRO-{strategy[-1]} states of 2 ranks" in printed
    assert "max |diff| 0 " in printed
    got = stored_tensors(tmp_path / "out")
    assert_same(got, stored_tensors(step / "hf"))  # fp32 run: the master weights are the exported ones
    original = stored_tensors(tiny_model_path)
    frozen = [n for n in got if n.startswith("model.visual.") and not n.startswith("model.visual.merger.")]
    trainable = [n for n in got if n not in frozen]
    assert frozen and all(torch.equal(got[n], original[n]) for n in frozen)  # frozen tensors came through
    assert any(not torch.equal(got[n], original[n]) for n in trainable)  # and the step moved the rest


def test_reference_rank_files_round_trip(reference_ckpt, tmp_path):
    actor, full = reference_ckpt
    report = convert(actor, tmp_path / "out")
    assert report.layout == "reference" and report.max_logit_diff == 0.0
    merged = [n for n in report.notes if n.startswith("reference rank files")][0]
    assert "replicated" in merged and "sharded on dim 0" in merged and "sharded on dim 1" in merged
    assert_same(stored_tensors(tmp_path / "out"), full)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "| Training stage | GRPO |" in readme and "| Steps | 7 |" in readme


def test_reference_files_with_dtensors(tiny_model_path, tmp_path, monkeypatch):
    """A file storing DTensors: their declared placements are used (and checked against the shapes)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from tests.scripts.helpers import legacy_name, write_reference

    actor = tmp_path / "actor"
    full = write_reference(tiny_model_path, actor, world=1)
    owned = not dist.is_initialized()  # an in-process vLLM engine of another test may hold the default group
    if owned:
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            monkeypatch.setenv("MASTER_PORT", str(sock.getsockname()[1]))
        dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        state = {legacy_name(k): distribute_tensor(v, mesh, [Shard(0) if v.ndim > 1 else Replicate()]) for k, v in full.items()}
        torch.save(state, actor / "model_world_size_1_rank_0.pt")
    finally:
        if owned:
            dist.destroy_process_group()
    report = convert(actor, tmp_path / "out")
    assert report.max_logit_diff == 0.0
    assert_same(stored_tensors(tmp_path / "out"), full)


def test_learner_file_alone_needs_hf_files(single_run, tiny_model_path, tmp_path):
    lone = tmp_path / "copied" / "learner"
    lone.mkdir(parents=True)
    shutil.copy(single_run / "checkpoints/step-1/learner/learner.pt", lone / "learner.pt")
    with pytest.raises(ConversionError, match="pass --hf-files"):
        convert(lone, tmp_path / "out")
    report = convert(lone / "learner.pt", tmp_path / "out", hf_files=tiny_model_path)
    assert report.layout == "learner" and report.max_logit_diff == 0.0
    assert_same(stored_tensors(tmp_path / "out"), stored_tensors(single_run / "checkpoints/step-1/hf"))


def test_missing_generation_config_is_derived_and_said(reference_copy, tmp_path):
    (reference_copy / "huggingface" / "generation_config.json").unlink()
    report = convert(reference_copy, tmp_path / "out")
    assert any("no generation_config.json" in n for n in report.notes)
    assert (tmp_path / "out" / "generation_config.json").is_file()


# --- strictness ---------------------------------------------------------------------------------
def _edit_rank(actor, rank: int, edit) -> None:
    path = actor / f"model_world_size_2_rank_{rank}.pt"
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def test_missing_key_in_one_rank_file_fails_naming_it(reference_copy, tmp_path):
    _edit_rank(reference_copy, 1, lambda s: s.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ConversionError, match=r"model_world_size_2_rank_1\.pt lacks 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        convert(reference_copy, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*partial"))


def test_key_missing_from_every_rank_fails(reference_copy, tmp_path):
    for r in range(2):
        _edit_rank(reference_copy, r, lambda s: s.pop("visual.merger.ln_q.weight"))
    with pytest.raises(ConversionError, match=r"missing: 'model\.visual\.merger\.ln_q\.weight'"):
        convert(reference_copy, tmp_path / "out")


def test_extra_key_fails(reference_copy, tmp_path):
    for r in range(2):
        _edit_rank(reference_copy, r, lambda s: s.__setitem__("model.layers.0.mlp.extra_scale", torch.ones(3)))
    with pytest.raises(ConversionError, match=r"unexpected tensor.*'model\.layers\.0\.mlp\.extra_scale'"):
        convert(reference_copy, tmp_path / "out")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["model.norm.weight"].add_(1.0), r"'model\.norm\.weight'.*replicated, but rank 1 holds other values"),
        (lambda s: s.__setitem__("lm_head.weight", s["lm_head.weight"] + 1.0), r"tied tensors .* differ"),
        (lambda s: s.__setitem__("model.layers.0.mlp.up_proj.weight", torch.zeros(5, 5)), r"do not assemble the full shape"),
    ],
)  # fmt: skip
def test_inconsistent_rank_files_fail(reference_copy, tmp_path, edit, message):
    _edit_rank(reference_copy, 1, edit)
    with pytest.raises(ConversionError, match=message):
        convert(reference_copy, tmp_path / "out")


def test_missing_rank_file_fails(reference_copy, tmp_path):
    (reference_copy / "model_world_size_2_rank_1.pt").unlink()
    with pytest.raises(ConversionError, match=r"world size 2 but rank file\(s\) \[1\]"):
        convert(reference_copy, tmp_path / "out")


def test_existing_output_is_refused(tiny_model_path, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="already exists"):
        convert(tiny_model_path, tmp_path / "out")


# --- dtype, shards, card, hub, vLLM -------------------------------------------------------------
def test_dtype_is_cast_only_when_asked(tiny_model_path, tmp_path):
    bf16 = convert(tiny_model_path, tmp_path / "bf16", dtype="bf16")
    assert (bf16.dtype_source, bf16.dtype_out) == ("float32", "bfloat16") and config_dtype(tmp_path / "bf16") == "bfloat16"
    assert 0.0 < bf16.max_logit_diff <= bf16.tolerance and "precision changed" in bf16.tolerance_note
    assert_same(stored_tensors(tmp_path / "bf16"), stored_tensors(tiny_model_path), dtype=torch.bfloat16)
    kept = convert(tmp_path / "bf16", tmp_path / "kept")  # a bf16 source stays bf16
    assert kept.dtype_out == "bfloat16" and kept.max_logit_diff == 0.0 and kept.tolerance == 1e-5
    with safe_open(str(tmp_path / "kept" / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}


class FakeApi:
    calls: list = []

    def __init__(self, *args, **kwargs):
        pass

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", repo_id, kwargs))

    def repo_info(self, repo_id, **kwargs):
        return mock.Mock(private=FakeApi.private)

    def upload_folder(self, **kwargs):
        FakeApi.calls.append(("upload_folder", kwargs))


@pytest.mark.parametrize("public", [False, True])
def test_cli_writes_shards_and_uploads_private_by_default(tiny_model_path, tmp_path, monkeypatch, capsys, public):
    FakeApi.calls, FakeApi.private = [], not public
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    out = tmp_path / "out"
    argv = [str(tiny_model_path), "--out", str(out), "--max-shard-size", "300KB", "--push-to-hub", "me/rexthinker-tiny"]
    assert cli(argv + (["--public"] if public else [])) == 0
    printed = capsys.readouterr().out
    assert "max |diff| 0 " in printed and f"({'public' if public else 'private'})" in printed
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(shards) >= 2 and sorted(set(weight_map.values())) == shards
    assert_same(stored_tensors(out), stored_tensors(tiny_model_path))
    (create, repo, kwargs), (upload, upload_kwargs) = FakeApi.calls
    assert create == "create_repo" and repo == "me/rexthinker-tiny" and kwargs["private"] is (not public)
    assert upload == "upload_folder" and upload_kwargs["folder_path"] == str(out)


def test_push_refuses_an_existing_public_repo_unless_public(tmp_path, monkeypatch):
    FakeApi.calls, FakeApi.private = [], False
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    with pytest.raises(ConversionError, match="exists and is public"):
        push_to_hub(tmp_path, "me/already-public")
    assert [c[0] for c in FakeApi.calls] == ["create_repo"]


def test_cli_reports_errors_without_a_traceback(reference_copy, tmp_path, capsys):
    _edit_rank(reference_copy, 0, lambda s: s.pop("model.norm.weight"))
    assert cli([str(reference_copy), "--out", str(tmp_path / "out")]) == 1
    assert "error: model_world_size_2_rank_0.pt lacks 'model.norm.weight'" in capsys.readouterr().err


def test_card_copies_eval_numbers_only_for_the_evaluated_step(single_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(single_run, run, symlinks=True, ignore=shutil.ignore_patterns("*.safetensors", "*.pt"))
    (run / "eval.json").write_text(json.dumps({"samples": 8, "format": 0.25, "accuracy_f1": 0.5, "baselines": {}}))
    step = run / "checkpoints/step-1"
    facts = card.gather(step / "hf", None, "hf")
    assert (facts.stage, facts.step, facts.total_steps) == ("sft", 1, 1)
    assert facts.eval == {"samples": 8, "format": 0.25, "accuracy_f1": 0.5, "baselines": {}}
    assert facts.base_model and facts.data["train"]
    state = json.loads((step / "trainer_state.json").read_text())
    (step / "trainer_state.json").write_text(json.dumps(dict(state, total_steps=5)))
    later = card.gather(step / "hf", None, "hf")
    assert later.eval is None and "not step 1" in later.eval_note


def test_card_reads_a_grpo_run(tmp_path):
    from rexthinker.config import save_config
    from rexthinker.grpo.config import GRPOConfig

    run = tmp_path / "grpo"
    step = run / "checkpoints" / "step-50"
    step.mkdir(parents=True)
    cfg = GRPOConfig()
    cfg.model.path, cfg.data.train = "outputs/sft/final", ["data/refcocog_20k.parquet"]
    save_config(cfg, run / "config.yaml")
    (step / "trainer_state.json").write_text(json.dumps({"step": 50, "total_steps": 312}))
    (run / "eval.json").write_text(json.dumps({"format": 0.9}))
    facts = card.gather(step / "hf", None, "hf")
    assert (facts.stage, facts.step, facts.total_steps, facts.base_model) == ("grpo", 50, 312, "outputs/sft/final")
    assert facts.data == {"train": ["data/refcocog_20k.parquet"]}
    assert "function: rewards/referring.py:compute_score" in facts.reward
    assert facts.eval is None  # eval.json measured step 312


@pytest.mark.vllm
def test_converted_reference_checkpoint_loads_in_vllm(reference_ckpt, tmp_path):
    report = convert(reference_ckpt[0], tmp_path / "out", vllm=True)
    assert report.vllm and "greedy token" in report.vllm
    assert "| vLLM | loads and generates" in (tmp_path / "out" / "README.md").read_text()
