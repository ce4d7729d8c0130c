"""The one compatibility shim of this package: groundingdino-py on transformers 5.

groundingdino-py wraps its BERT text encoder in ``BertModelWarper``, whose constructor copies three
helpers from the ``BertModel`` instance: ``get_extended_attention_mask``, ``invert_attention_mask``
and ``get_head_mask``. transformers 5 removed them from its models (attention layers now build their
own masks), so building the model fails with ``AttributeError``. The rest of the wrapper still works
on transformers 5 when those helpers return what transformers 4 returned: an additive float mask of
shape ``(batch, 1, [query,] key)`` and one ``None`` head mask per layer.

The shim is an *instance* patch, gated on the transformers major version: :func:`install` wraps
groundingdino-py's own ``get_pretrained_language_model`` so that every BERT it loads gets the three
helpers as attributes of that one object. No transformers class is modified. ``tests/data_tools/
test_gdpy_compat.py`` checks the gate and that the patched path gives the same hidden states as
``BertModel.forward``.
"""

from __future__ import annotations

import types

import torch
import transformers

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
NEEDS_SHIM = TRANSFORMERS_MAJOR >= 5  # transformers 4 still has the helpers
_MARK = "_rexthinker_gdpy_shim"


def extended_attention_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A 0/1 (or bool) mask of shape ``(batch, key)`` or ``(batch, query, key)`` as the additive mask
    BERT's attention adds to its scores: 0 where attending is allowed, the dtype's minimum elsewhere,
    with a broadcast head axis (and a query axis for 2-D input)."""
    if mask.dim() == 2:
        mask = mask[:, None, None, :]
    elif mask.dim() == 3:
        mask = mask[:, None, :, :]
    else:
        raise ValueError(f"attention mask must have 2 or 3 dimensions, got shape {tuple(mask.shape)}")
    mask = mask.to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


def _get_extended_attention_mask(self, attention_mask, input_shape=None, device=None, dtype=None):
    return extended_attention_mask(attention_mask, dtype or self.dtype)


def _invert_attention_mask(self, encoder_attention_mask):
    return extended_attention_mask(encoder_attention_mask, self.dtype)


def _get_head_mask(self, head_mask, num_hidden_layers, is_attention_chunked=False):
    if head_mask is not None:
        raise NotImplementedError("head masks are not supported by the transformers 5 shim")
    return [None] * num_hidden_layers


def patch_bert(bert) -> None:
    """Give one BERT model the three helpers groundingdino-py's wrapper copies (no-op where they
    exist or the transformers version does not need it)."""
    if not NEEDS_SHIM:
        return
    for name, fn in (
        ("get_extended_attention_mask", _get_extended_attention_mask),
        ("invert_attention_mask", _invert_attention_mask),
        ("get_head_mask", _get_head_mask),
    ):
        if not hasattr(bert, name):
            object.__setattr__(bert, name, types.MethodType(fn, bert))


def install() -> None:
    """Make groundingdino-py's text-encoder loader return patched BERT models (idempotent).

    Must run before ``groundingdino.models.build_model``. Needs groundingdino-py to be importable."""
    if not NEEDS_SHIM:
        return
    from groundingdino.util import get_tokenlizer

    loader = get_tokenlizer.get_pretrained_language_model
    if getattr(loader, _MARK, False):
        return

    def load_patched(text_encoder_type):
        model = loader(text_encoder_type)
        patch_bert(model)
        return model

    setattr(load_patched, _MARK, True)
    get_tokenlizer.get_pretrained_language_model = load_patched
