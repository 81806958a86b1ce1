"""VLM assembly: splicing, padding, answer-only loss, and cached generation."""

from __future__ import annotations

import torch

from vlmlab.data.dataset import IGNORE, VQADataset
from vlmlab.data.sources import load_source
from vlmlab.evaluation.generate import greedy_generate
from vlmlab.models.build import build_model
from vlmlab.train.trainer import tokenizer_texts


def _setup(cfg, with_answers):
    _, items = load_source(cfg.data.train[0], "data.train.0")
    model = build_model(cfg, texts=tokenizer_texts(items)).eval()
    data = VQADataset(items[:6], model.llm, cfg.data.image, model.num_image_tokens, with_answers=with_answers)
    return model, data


def test_image_span_and_answer_only_labels(tiny_cfg):
    model, data = _setup(tiny_cfg, with_answers=True)
    batch = data.collate([data[i] for i in range(6)])
    assert batch.image_mask.sum(1).tolist() == [model.num_image_tokens] * 6
    for row in range(6):
        supervised = batch.labels[row] != IGNORE
        answer = model.llm.encode_answer(data.items[row].answer)
        assert batch.labels[row][supervised].tolist() == answer  # answer + stop token, nothing else
        assert not (supervised & batch.image_mask[row]).any()
    assert (batch.attention_mask[:, -1] == 1).all()  # left padding
    for row in range(6):  # the recorded span is where the mask puts the vision tokens
        start, length = data.vision_span(row)
        pad = int((batch.attention_mask[row] == 0).sum())
        assert batch.image_mask[row].nonzero().squeeze(1).tolist() == list(range(pad + start, pad + start + length))


def test_left_padding_does_not_change_a_row(tiny_cfg):
    model, data = _setup(tiny_cfg, with_answers=True)
    rows = [data[i] for i in range(6)]
    batch = data.collate(rows)
    alone = data.collate([rows[0]])
    h_batch = model(**batch.model_inputs()).hidden_states[0]
    h_alone = model(**alone.model_inputs()).hidden_states[0]
    width = alone.input_ids.shape[1]
    torch.testing.assert_close(h_batch[-width:], h_alone, atol=1e-5, rtol=1e-5)


def test_loss_matches_manual_cross_entropy(tiny_cfg):
    model, data = _setup(tiny_cfg, with_answers=True)
    batch = data.collate([data[i] for i in range(4)])
    out = model(**batch.model_inputs(), labels=batch.labels)
    logits = model.logits(**batch.model_inputs())[:, :-1]
    targets = batch.labels[:, 1:]
    manual = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE
    )
    torch.testing.assert_close(out.loss, manual)


def test_cached_greedy_equals_uncached_argmax(tiny_cfg):
    model, data = _setup(tiny_cfg, with_answers=False)
    batch = data.collate([data[i] for i in range(4)])
    gen = greedy_generate(model, batch, max_new_tokens=3)
    ids, mask, image_mask = batch.input_ids, batch.attention_mask, batch.image_mask
    pixels = batch.pixel_values
    expected = [[] for _ in range(4)]
    for _ in range(3):  # recompute the whole sequence each step, no cache
        logits = model.logits(ids, mask, image_mask, pixels)[:, -1]
        nxt = logits.argmax(-1)
        for r in range(4):
            expected[r].append(int(nxt[r]))
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        image_mask = torch.cat([image_mask, torch.zeros_like(image_mask[:, :1])], 1)
    stop = model.llm.stop_token_id
    for r in range(4):
        exp = expected[r][: expected[r].index(stop)] if stop in expected[r] else expected[r]
        assert gen.token_ids[r] == exp
        assert 0.0 < gen.confidence[r] <= 1.0
