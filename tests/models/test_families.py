"""Model families: the registry, the lookup from a checkpoint folder, Qwen2.5-VL reproducing today's
constants exactly, and every family's geometry agreeing with the installed transformers."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rexthinker import coords
from rexthinker.models import families


def test_qwen2_5_vl_is_the_current_behaviour_exactly():
    fam = families.get_family("qwen2_5_vl")
    assert fam.factor == coords.PATCH_FACTOR == 28
    assert fam.train_pixels == (coords.TRAIN_MIN_PIXELS, coords.TRAIN_MAX_PIXELS)
    assert fam.eval_min_pixels == coords.EVAL_MIN_PIXELS
    assert fam.frame == coords.MODEL_PIXELS
    for w, h in [(300, 200), (1920, 1080), (451, 277)]:
        frame = fam.box_frame(w, h, *fam.train_pixels)
        assert frame.size == coords.model_frame_size(w, h)
        assert frame.encode([10, 20, w, h], (w, h)) == coords.to_model_frame([10, 20, w, h], (w, h), frame.size)


def test_qwen3_families_write_relative_boxes_at_factor_32():
    for name in ("qwen3_vl", "qwen3_5"):
        fam = families.get_family(name)
        assert fam.factor == 32 and fam.frame == coords.RELATIVE_1000
        assert fam.train_pixels == (16 * 32 * 32, 1280 * 32 * 32)
        frame = fam.box_frame(300, 200, *fam.train_pixels)
        assert frame.size == (1000, 1000)
        assert frame.encode([30, 20, 150, 100], (300, 200)) == [100, 100, 500, 500]


def test_lookup_by_name_model_type_and_checkpoint_folder(tmp_path):
    assert families.family_for_model_type("qwen3_vl") is families.QWEN3_VL
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl", "architectures": ["x"]}))
    assert families.family_of(tmp_path) is families.QWEN2_5_VL
    with pytest.raises(KeyError, match="unknown model family"):
        families.get_family("llava")
    with pytest.raises(KeyError, match="no model family for model_type 'llava'"):
        families.family_for_model_type("llava")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        families.family_of(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(KeyError, match="no model_type"):
        families.family_of(tmp_path)


def test_registry_refuses_duplicates_and_bad_frames():
    before = dict(families.FAMILIES)
    with pytest.raises(ValueError, match="already registered"):
        families.register(dataclasses.replace(families.QWEN3_VL, model_type="other"))
    with pytest.raises(ValueError, match="already claimed"):
        families.register(dataclasses.replace(families.QWEN3_VL, name="qwen3_vl_copy"))
    with pytest.raises(ValueError, match="unknown frame"):
        dataclasses.replace(families.QWEN3_VL, frame="pixels")
    assert families.FAMILIES == before


@pytest.mark.parametrize("name", sorted(families.FAMILIES))
def test_family_matches_the_installed_transformers(name):
    """Classes exist and are what the Auto* mappings pick; patch size and merge are the config defaults."""
    import transformers
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    fam = families.get_family(name)
    assert MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[fam.model_type] == fam.model_class
    assert PROCESSOR_MAPPING_NAMES[fam.model_type] == fam.processor_class
    assert hasattr(transformers, fam.model_class) and hasattr(transformers, fam.processor_class)
    vision = CONFIG_MAPPING[fam.model_type]().vision_config
    assert (vision.patch_size, vision.spatial_merge_size) == (fam.patch_size, fam.merge_size)


def test_tiny_checkpoint_is_qwen2_5_vl(tiny_model_path):
    assert families.family_of(tiny_model_path) is families.QWEN2_5_VL


def _checkpoint(folder, model_type):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def test_model_family_is_the_checkpoints_own_and_refuses_another_recorded_frame(tmp_path):
    qwen3 = _checkpoint(tmp_path / "q3", "qwen3_vl")
    assert families.model_family(qwen3) is families.QWEN3_VL  # nothing recorded: the config decides
    assert families.model_family(qwen3, "qwen2_5_vl") is families.QWEN2_5_VL
    families.record_frame(qwen3, families.QWEN3_VL)
    assert json.loads((qwen3 / families.FRAME_FILE).read_text()) == {"family": "qwen3_vl", "frame": "relative_1000"}
    assert families.model_family(qwen3) is families.QWEN3_VL
    assert families.model_family(qwen3, "qwen3_5") is families.QWEN3_5  # the same frame
    with pytest.raises(families.FrameMismatchError, match=rf"{qwen3} records box frame 'relative_1000'.*'model_pixels'"):
        families.model_family(qwen3, "qwen2_5_vl")
    mislabelled = _checkpoint(tmp_path / "q25", "qwen2_5_vl")
    families.record_frame(mislabelled, families.QWEN3_VL)
    with pytest.raises(families.FrameMismatchError, match="records box frame 'relative_1000'"):
        families.model_family(mislabelled)
