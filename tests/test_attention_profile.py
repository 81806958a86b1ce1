"""Attention-by-depth profile: shares are proper fractions, the saturation rule, eager only for the probe."""

from __future__ import annotations

import torch

from vlmlab.measure.attention import AttentionProfile, image_attention_shares, text_queries
from vlmlab.models.llm.base import eager_attention
from vlmlab.models.routing.base import saturation_layer
from vlmlab.models.vlm import position_ids_from_mask


def _model_and_batch(tiny_cfg):
    from vlmlab.data.dataset import VQADataset
    from vlmlab.data.sources import load_source
    from vlmlab.models.build import build_model

    model = build_model(tiny_cfg, texts=["what is the shape?", "red", "circle"]).eval()
    items = load_source(tiny_cfg.data.eval[0], "data.eval.0", tiny_cfg.data.image)[1][:6]
    data = VQADataset(items, model.llm, tiny_cfg.data.image, model.num_image_tokens, with_answers=False)
    return model, data.collate([data[i] for i in range(6)])


def test_image_and_non_image_shares_of_every_query_row_sum_to_one(tiny_cfg):
    model, b = _model_and_batch(tiny_cfg)
    embeds = model.embed(b.input_ids, b.image_mask, b.pixel_values)
    with torch.no_grad(), eager_attention(model.llm.lm):
        out = model.llm.decoder(
            inputs_embeds=embeds,
            attention_mask=b.attention_mask,
            position_ids=position_ids_from_mask(b.attention_mask),
            output_attentions=True,
        )
    queries = text_queries(b.attention_mask, b.image_mask)
    assert queries.any() and not (queries & b.image_mask).any()
    for attn in out.attentions:
        image = (attn * b.image_mask[:, None, None, :]).sum(-1)
        other = (attn * (b.attention_mask.bool() & ~b.image_mask)[:, None, None, :]).sum(-1)
        rows = queries[:, None, :].expand_as(image)
        torch.testing.assert_close((image + other)[rows], torch.ones(int(rows.sum())), atol=1e-5, rtol=0)
    assert model.llm.lm.config._attn_implementation == "sdpa"  # eager only inside the probe
    shares = image_attention_shares(model, b)
    assert shares.shape == (len(model.llm.decoder.layers), 6, model.llm.lm.config.num_attention_heads)
    assert float(shares.min()) >= 0 and float(shares.max()) <= 1


def test_saturation_layer_is_where_the_share_stays_below_the_threshold():
    assert saturation_layer([0.68, 0.2, 0.07, 0.12, 0.05, 0.04], 0.1) == 4  # the dip at layer 2 does not count
    assert saturation_layer([0.68, 0.07, 0.04], 0.1) == 1
    assert saturation_layer([0.5, 0.4], 0.1) is None


def test_attention_cli_writes_the_profile(tmp_path, tiny_cfg, capsys):
    import json

    from vlmlab.cli import main
    from vlmlab.train.trainer import Trainer

    Trainer(tiny_cfg, tmp_path / "run", resume=False).run_training()
    assert main(["attention", str(tmp_path / "run"), "--n-probe", "8", "--threshold", "0.9"]) == 0
    measured = AttentionProfile(tmp_path / "run", n_probe=8)
    assert measured.path.parent == tmp_path / "run" / "measurements" and measured.path.name.startswith("attention-")
    record = json.loads(measured.path.read_text())
    assert record["items"] == 8 and len(record["share"]) == 2 and all(0 <= s <= 1 for s in record["share"])
    assert measured.profile(0.9)["saturation_layer"] == saturation_layer(record["share"], 0.9)
    assert "saturation layer" in capsys.readouterr().err
    # stored under its inputs: asking again (another batch size, another threshold) reads it, measures nothing
    stamp = measured.path.stat().st_mtime_ns
    assert main(["attention", str(tmp_path / "run"), "--n-probe", "8", "--batch-size", "3", "--threshold", "0.5"]) == 0
    assert measured.path.stat().st_mtime_ns == stamp and "measured before" in capsys.readouterr().err
    assert AttentionProfile(tmp_path / "run", n_probe=9).path != measured.path  # other parameters, another artifact
