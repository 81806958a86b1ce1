"""Linear CKA properties, hook capture of hidden states, and the `representations` analysis on a tiny study."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmlab.analysis.representations import linear_cka
from vlmlab.measure.representations import capture_last_token_states


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(400, 24))


def test_cka_of_a_representation_with_itself_is_one(x):
    assert linear_cka(x, x) == pytest.approx(1.0)


def test_cka_is_invariant_to_rotation_and_isotropic_scaling(x):
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(24, 24)))
    y = np.random.default_rng(2).normal(size=(400, 10)) + x[:, :10]
    assert linear_cka(x @ q, y) == pytest.approx(linear_cka(x, y))
    assert linear_cka(3.7 * x, y) == pytest.approx(linear_cka(x, y))
    assert linear_cka(x + 5.0, y) == pytest.approx(linear_cka(x, y))  # centring removes offsets


def test_cka_against_independent_noise_is_near_zero_for_large_n():
    rng = np.random.default_rng(3)
    assert linear_cka(rng.normal(size=(20000, 8)), rng.normal(size=(20000, 8))) < 0.01
    with pytest.raises(ValueError, match="same inputs"):
        linear_cka(rng.normal(size=(5, 2)), rng.normal(size=(6, 2)))


def test_hooks_capture_each_layers_last_token_state_and_are_removed(tiny_cfg):
    from vlmlab.data.dataset import VQADataset
    from vlmlab.data.sources import load_source
    from vlmlab.models.build import build_model

    model = build_model(tiny_cfg, texts=["what is the shape?", "red", "circle"]).eval()
    items = load_source(tiny_cfg.data.eval[0], "data.eval.0", tiny_cfg.data.image)[1][:10]
    data = VQADataset(items, model.llm, tiny_cfg.data.image, model.num_image_tokens, with_answers=False)
    states = capture_last_token_states(model, data, batch_size=4)
    assert sorted(states) == [0, 1] and states[0].shape == (10, 32)
    assert all(not layer._forward_hooks for layer in model.llm.decoder.layers)
    b = data.collate([data[i] for i in range(10)])
    with torch.no_grad():
        embeds = model.embed(b.input_ids, b.image_mask, b.pixel_values)
        from vlmlab.models.vlm import position_ids_from_mask

        out = model.llm.decoder(
            inputs_embeds=embeds,
            attention_mask=b.attention_mask,
            position_ids=position_ids_from_mask(b.attention_mask),
            output_hidden_states=True,
        )
    torch.testing.assert_close(states[0], out.hidden_states[1][:, -1])  # hidden_states[0] is the embeddings
