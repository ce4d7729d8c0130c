"""The groundingdino-py shim for transformers 5, in isolation (the package itself is optional and
not installed in the test environment; the last test runs it for real where it is)."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from transformers import BertConfig, BertModel

from rexthinker.detect import gdpy_compat


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48)
    return BertModel(config).eval()


def test_gate_matches_the_installed_transformers(bert):
    """The shim is needed exactly when BertModel lacks the helpers groundingdino-py copies."""
    missing = not hasattr(
        BertModel(BertConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=1, intermediate_size=8)),
        "get_head_mask",
    )
    assert gdpy_compat.NEEDS_SHIM == (gdpy_compat.TRANSFORMERS_MAJOR >= 5) == missing


def test_extended_mask_values_and_shapes():
    two_d = torch.tensor([[1, 1, 0]])
    out = gdpy_compat.extended_attention_mask(two_d)
    assert out.shape == (1, 1, 1, 3)
    assert out[0, 0, 0, :2].tolist() == [0.0, 0.0] and out[0, 0, 0, 2] == torch.finfo(torch.float32).min
    three_d = torch.eye(3, dtype=torch.bool)[None]
    assert gdpy_compat.extended_attention_mask(three_d).shape == (1, 1, 3, 3)
    with pytest.raises(ValueError):
        gdpy_compat.extended_attention_mask(torch.ones(3))


def _warper_path(bert, input_ids, mask):
    """What groundingdino-py's BertModelWarper does: embeddings, then the encoder under the
    extended mask from the (shimmed) helper, one head mask per layer."""
    extended = bert.get_extended_attention_mask(mask, input_ids.shape, input_ids.device)
    head_mask = bert.get_head_mask(None, bert.config.num_hidden_layers)
    assert head_mask == [None] * bert.config.num_hidden_layers
    hidden = bert.embeddings(input_ids=input_ids)
    return bert.encoder(hidden, attention_mask=extended)[0]


def test_patched_path_matches_bert_forward(bert):
    gdpy_compat.patch_bert(bert)
    input_ids = torch.tensor([[2, 5, 7, 9, 11, 0], [3, 4, 6, 8, 0, 0]])
    mask = (input_ids != 0).long()
    with torch.no_grad():
        expected = bert(input_ids=input_ids, attention_mask=mask).last_hidden_state
        got = _warper_path(bert, input_ids, mask)
    valid = mask.bool()
    assert torch.allclose(got[valid], expected[valid], atol=1e-5)


def test_block_mask_isolates_phrases(bert):
    """groundingdino-py passes a (batch, n, n) mask that keeps each phrase to itself: changing a
    token of one phrase must not change the other phrase's states."""
    gdpy_compat.patch_bert(bert)
    block = torch.zeros(1, 6, 6, dtype=torch.long)
    block[0, :3, :3] = 1
    block[0, 3:, 3:] = 1
    a = torch.tensor([[2, 5, 7, 9, 11, 13]])
    b = torch.tensor([[2, 5, 7, 9, 12, 14]])
    with torch.no_grad():
        out_a, out_b = _warper_path(bert, a, block), _warper_path(bert, b, block)
    assert torch.allclose(out_a[0, :3], out_b[0, :3], atol=1e-6)
    assert not torch.allclose(out_a[0, 3:], out_b[0, 3:])


def test_install_wraps_the_package_loader_once(monkeypatch, bert):
    """install() patches what groundingdino-py's loader returns (an instance patch), idempotently."""
    loaded = []

    def fake_loader(name):
        model = BertModel(bert.config)
        loaded.append(name)
        return model

    package = types.ModuleType("groundingdino")
    util = types.ModuleType("groundingdino.util")
    tokenlizer = types.ModuleType("groundingdino.util.get_tokenlizer")
    tokenlizer.get_pretrained_language_model = fake_loader
    util.get_tokenlizer = tokenlizer
    package.util = util
    for name, module in (
        ("groundingdino", package),
        ("groundingdino.util", util),
        ("groundingdino.util.get_tokenlizer", tokenlizer),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    gdpy_compat.install()
    wrapped = tokenlizer.get_pretrained_language_model
    gdpy_compat.install()
    assert tokenlizer.get_pretrained_language_model is wrapped
    model = wrapped("bert-base-uncased")
    assert loaded == ["bert-base-uncased"]
    if gdpy_compat.NEEDS_SHIM:
        assert "get_extended_attention_mask" in vars(model)  # on the instance ...
        assert not hasattr(BertModel, "get_extended_attention_mask")  # ... never on the class


TINY_GDPY_CONFIG = """
batch_size = 1
modelname = "groundingdino"
backbone = "swin_T_224_1k"
position_embedding = "sine"
pe_temperatureH = 20
pe_temperatureW = 20
return_interm_indices = [1, 2, 3]
backbone_freeze_keywords = None
enc_layers = 1
dec_layers = 2
pre_norm = False
dim_feedforward = 64
hidden_dim = 256
dropout = 0.0
nheads = 8
num_queries = 20
query_dim = 4
num_patterns = 0
num_feature_levels = 4
enc_n_points = 4
dec_n_points = 4
two_stage_type = "standard"
two_stage_bbox_embed_share = False
two_stage_class_embed_share = False
transformer_activation = "relu"
dec_pred_bbox_embed_share = True
dn_box_noise_scale = 1.0
dn_label_noise_ratio = 0.5
dn_label_coef = 1.0
dn_bbox_coef = 1.0
embed_init_tgt = True
dn_labelbook_size = 2000
max_text_len = 256
text_encoder_type = "bert-base-uncased"
use_text_enhancer = True
use_fusion_layer = True
use_checkpoint = False
use_transformer_ckpt = False
use_text_cross_attention = True
text_dropout = 0.0
fusion_dropout = 0.0
fusion_droppath = 0.1
sub_sentence_present = True
"""


@pytest.mark.slow
def test_backend_runs_with_the_real_package(tmp_path, tiny_detector_path):
    """End to end through groundingdino-py (Swin-T backbone, short transformer, random weights, the
    tiny detector's BERT folder as text encoder). Skipped where the package is not installed."""
    pytest.importorskip("groundingdino")
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig
    from PIL import Image
    from transformers import AutoTokenizer, GroundingDinoConfig

    from rexthinker.detect import DetectorSpec, load_detector

    text_encoder = tmp_path / "bert"
    BertModel(GroundingDinoConfig.from_pretrained(tiny_detector_path).text_config).save_pretrained(text_encoder)
    AutoTokenizer.from_pretrained(tiny_detector_path).save_pretrained(text_encoder)
    config = tmp_path / "tiny_cfg.py"
    config.write_text(TINY_GDPY_CONFIG)
    gdpy_compat.install()
    args = SLConfig.fromfile(str(config))
    args.text_encoder_type = str(text_encoder)
    torch.manual_seed(0)
    torch.save({"model": build_model(args).state_dict()}, tmp_path / "weights.pth")
    spec = DetectorSpec(
        backend="groundingdino-py",
        model=str(tmp_path / "weights.pth"),
        config=str(config),
        text_encoder=str(text_encoder),
        batch_size=2,
    )
    detector = load_detector(spec)
    images = [Image.new("RGB", (96, 64), (200, 30, 30)), Image.new("RGB", (64, 80), (20, 30, 200))]
    found = detector.detect_batch(images, ["person", "red car"])
    for image, det in zip(images, found):
        assert all(0 <= b[0] < b[2] <= image.width and 0 <= b[1] < b[3] <= image.height for b in det.boxes)
