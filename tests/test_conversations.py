"""Training on LLaVA-1.5's data as LLaVA does: whole conversations, text-only records, max length, grouped batches,
worker processes; each checked on tiny models in seconds."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from _mix import write_tiny_mix
from vlmlab import io
from vlmlab.cli import main
from vlmlab.config import config_from_dict
from vlmlab.data.dataset import IGNORE, VQADataset
from vlmlab.data.loader import batch_loader
from vlmlab.data.order import SeededBatchOrder, modality_length
from vlmlab.data.sources import load_training_items
from vlmlab.models.build import build_model
from vlmlab.runs import RunDir
from vlmlab.train.trainer import Trainer

TURNS = [("what colour is the square?", "red"), ("is it big?", "no"), ("is it red?", "yes")]


@pytest.fixture
def mix_raw(tiny_raw, tmp_path):
    """The tiny config on a tiny mix665k-shaped file (llava-json)."""
    file = write_tiny_mix(tmp_path / "mix")
    tiny_raw["data"]["train"] = {"task": "llava-json", "split": "train", "path": str(file)}
    tiny_raw["data"]["eval"] = [{"task": "llava-json", "split": "train", "path": str(file), "limit": 8}]
    return tiny_raw


def _built(raw):
    cfg = config_from_dict(raw)
    items = load_training_items(cfg)
    texts = [t for it in items for turn in it.turns for t in turn] + [t for turn in TURNS for t in turn]
    return cfg, items, build_model(cfg, texts=texts)


@pytest.mark.parametrize("llm", ["llama2-tiny", "llama3-tiny"])  # vicuna and llama3 templates
def test_a_three_turn_conversation_supervises_exactly_its_answers_and_stop_tokens(mix_raw, llm):
    mix_raw["model"]["llm"]["id"] = llm
    _, _, model = _built(mix_raw)
    text = model.llm.text
    ids, labels = text.encode_conversation(TURNS, image=True)
    supervised = [i for i, label in zip(ids, labels) if label != IGNORE]
    assert all(label in (IGNORE, i) for i, label in zip(ids, labels))
    assert supervised == [t for _, a in TURNS for t in text.encode_answer(a)]  # three answers, each + stop
    assert supervised.count(text.stop_token_id) == 3
    masked = text.tokenizer.decode([i for i, label in zip(ids, labels) if label == IGNORE])
    assert all(q in masked for q, _ in TURNS)  # the user turns are context, not targets
    first_target = next(p for p, label in enumerate(labels) if label != IGNORE)
    assert ids.count(model.llm.image_token_id) == 1 and ids.index(model.llm.image_token_id) < first_target
    one, one_labels = text.encode_conversation(TURNS[:1], image=True)  # one turn = the eval prompt + the answer
    prompt = text.encode_prompt(TURNS[0][0])
    assert one == prompt + text.encode_answer("red") and one_labels[: len(prompt)] == [IGNORE] * len(prompt)
    at_end, _ = text.encode_conversation(TURNS[:1], image=True, image_at_end=True)
    assert at_end.index(model.llm.image_token_id) > one.index(model.llm.image_token_id)


def _per_row_losses(model, batch) -> list[float]:
    logits = model.logits(**batch.model_inputs())[:, :-1]
    targets = batch.labels[:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    return [float(nll[r][targets[r] != IGNORE].sum()) for r in range(len(targets))]


def test_text_only_and_image_rows_in_one_batch_match_each_alone(mix_raw):
    cfg, items, model = _built(mix_raw)
    model.eval()
    data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=True)
    text_only = [i for i, it in enumerate(items) if it.image is None][:2]
    with_image = [i for i, it in enumerate(items) if it.image is not None and it.conversation][:3]
    rows = [with_image[0], text_only[0], with_image[1], text_only[1], with_image[2]]
    batch = data.collate([data[i] for i in rows])
    assert batch.pixel_values.shape[0] == 3  # text-only rows cost no tower compute: no dummy images
    with torch.no_grad():
        mixed = _per_row_losses(model, batch)
        alone = [_per_row_losses(model, data.collate([data[i]]))[0] for i in rows]
        text_batch = data.collate([data[i] for i in text_only])
        assert text_batch.pixel_values.shape[0] == 0  # a batch of text only never runs the tower
        assert _per_row_losses(model, text_batch) == pytest.approx([alone[1], alone[3]], rel=1e-5)
    assert mixed == pytest.approx(alone, rel=1e-5)


def test_max_length_cuts_text_never_the_image_and_counts_what_it_drops(mix_raw):
    cfg, items, model = _built(mix_raw)
    n_vision = model.num_image_tokens
    full = VQADataset(items, model.llm, cfg.data.image, n_vision, with_answers=True)
    i = next(i for i, it in enumerate(items) if it.image is not None and len(it.turns) == 3)
    ids, labels, _ = full.tokens(i)
    start = ids.index(model.llm.image_token_id)
    first_answer = next(p for p, label in enumerate(labels) if label != IGNORE)

    def row(max_length):
        return VQADataset(items, model.llm, cfg.data.image, n_vision, with_answers=True, max_length=max_length)[i]

    kept = row(first_answer + 2)  # vision span and the first answer token fit
    assert len(kept.ids) == first_answer + 2 and kept.ids.count(model.llm.image_token_id) == n_vision
    assert kept.dropped is None and kept.labels[-1] != IGNORE and kept.ids == ids[: first_answer + 2]
    no_target = row(first_answer)  # everything supervised is cut: the row teaches nothing, and says why
    assert no_target.dropped == "no supervised token is left within train.max_length"
    cut_image = row(start + n_vision - 1)  # the image would be cut: never; the row shrinks and is dropped
    assert cut_image.dropped.startswith("its vision tokens end at") and cut_image.image is None
    assert cut_image.ids == ids[:1] and cut_image.labels == [IGNORE]
    batch = full.collate([row(first_answer), row(first_answer + 2)])
    assert [why for _, why in batch.dropped] == ["no supervised token is left within train.max_length"]


def test_grouped_order_is_one_modality_per_batch_resume_exact_and_rank_split(mix_raw):
    items = load_training_items(config_from_dict(mix_raw))
    lengths = [modality_length(it) for it in items]
    order = SeededBatchOrder(len(items), 4, seed=3, total_steps=30, lengths=lengths)  # 4 of the 48 are text-only
    epoch = [order.global_indices(k) for k in range(order.steps_per_epoch)]
    assert sorted(i for b in epoch[:-1] for i in b) == sorted(set(i for b in epoch[:-1] for i in b))  # no repeats
    assert set(i for b in epoch for i in b) == set(range(len(items)))  # every item once per epoch
    pure = [b for b in epoch[:-1] if len({lengths[i] > 0 for i in b}) == 1]
    assert len(pure) >= len(epoch) - 2  # only the mixed remainder mixes modalities
    assert [b for b in epoch if all(lengths[i] < 0 for i in b)]  # a text-only batch exists
    again = SeededBatchOrder(len(items), 4, seed=3, total_steps=30, lengths=lengths)
    assert [again.global_indices(k) for k in range(30)] == [order.global_indices(k) for k in range(30)]
    assert [order.global_indices(k) for k in range(12)] != [order.global_indices(k) for k in range(12, 24)]
    resumed = list(SeededBatchOrder(len(items), 4, seed=3, total_steps=30, start_step=17, lengths=lengths))
    assert resumed == list(order)[17:]
    ranks = [list(SeededBatchOrder(len(items), 4, 3, 30, rank=r, world=2, lengths=lengths)) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == list(order)  # 2 ranks x 2 = 1 x 4


def test_workers_give_the_same_batches_as_the_training_process(mix_raw):
    cfg, items, model = _built(mix_raw)
    data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=True, max_length=40)
    order = SeededBatchOrder(len(items), 8, 0, 12, lengths=[modality_length(it) for it in items])
    here = list(batch_loader(data, order, workers=0))
    there = list(batch_loader(data, order, workers=2))
    assert len(here) == len(there) == 12
    for a, b in zip(here, there):
        for field in ("input_ids", "attention_mask", "image_mask", "pixel_values", "labels"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field
        assert a.indices == b.indices and a.dropped == b.dropped


class _Killed(Exception):
    pass


def test_grouped_training_with_workers_resumes_exactly(mix_raw, tmp_path, monkeypatch):
    mix_raw["train"].update(checkpoint_every=2, group_by_length="modality", max_length=48)
    mix_raw["data"]["workers"] = 2
    cfg = config_from_dict(mix_raw)
    ref = RunDir(tmp_path / "ref")
    Trainer(cfg, ref.path).run_training()

    original = Trainer.checkpoint

    def crash(self, optimizer, stage, step):
        original(self, optimizer, stage, step)
        if stage == 1 and step == 2:
            raise _Killed

    monkeypatch.setattr(Trainer, "checkpoint", crash)
    run = RunDir(tmp_path / "run")
    trainer = Trainer(cfg, run.path)
    with pytest.raises(_Killed):
        trainer.run_training()
    assert trainer.workers == 2 and trainer.data.max_length == 48
    monkeypatch.setattr(Trainer, "checkpoint", original)
    Trainer(cfg, run.path, resume=True).run_training()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert strip(io.read_jsonl(run.train_log)) == strip(io.read_jsonl(ref.train_log))
    from safetensors.torch import load_file

    a, b = load_file(str(ref.final / "model.safetensors")), load_file(str(run.final / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_tiny_mix_trains_end_to_end_from_the_cli(mix_raw, tmp_path, capsys):
    raw = copy.deepcopy(mix_raw)
    raw["train"].update(group_by_length="modality", max_length=12)  # some conversations do not fit
    raw["data"]["workers"] = 1
    config = tmp_path / "mix.yaml"
    io.write_yaml(config, raw)
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    run = RunDir(tmp_path / "run")
    info = io.read_json(run.train_info)
    dropped = [r for r in io.read_jsonl(run.train_log) if r.get("event") == "dropped"]
    assert dropped and info["dropped"] == {"items": len(dropped), "max_length": 12}
    assert all(r["why"] for r in dropped)
    err = " ".join(capsys.readouterr().err.split())
    assert f"{len(dropped)} training rows did not fit train.max_length=12" in err
    assert run.predictions().is_file()


def test_a_stage_trains_on_its_own_data_as_llava_aligns_on_captions(mix_raw, tmp_path):
    """LLaVA-1.5: align on the 558k captions, finetune on mix665k. Here: align on 12 one-turn captions."""
    import json

    captions = [
        {
            "id": f"cap-{i}",
            "image": f"coco/{i}.png",
            "conversations": [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "a square"}],
        }
        for i in range(12)
        if i % 10 != 9
    ]
    file = tmp_path / "mix" / "captions.json"
    file.write_text(json.dumps(captions))
    mix_raw["train"]["stages"][0] = {
        "name": "align",
        "epochs": 1,
        "lr": {"projector": 1e-3},
        "data": {"task": "llava-json", "split": "train", "path": str(file)},
    }
    cfg = config_from_dict(mix_raw)
    run = RunDir(tmp_path / "run")
    Trainer(cfg, run.path).run_training()
    align = [r for r in io.read_jsonl(run.train_log) if r.get("stage") == "align" and "loss" in r]
    assert [r["step"] for r in align] == [1, 2]  # 11 captions in batches of 8: 2 steps (data.train has 48 items)
    from vlmlab.data.order import training_order_fingerprints
    from vlmlab.data.sources import load_stage_items

    a, b = training_order_fingerprints(cfg, lambda s: load_stage_items(cfg, s))
    assert a != b  # the control check fingerprints each stage's own items


def test_image_position_after_puts_the_vision_tokens_after_the_question_in_training_and_evaluation(tiny_raw, tmp_path):
    """`data.image.position: after` (`{question}\\n<image>`) for tasks that do not place the image themselves, in
    the training rows and the evaluation prompts alike; LLaVA records keep their own placement; the tower's cache
    key ignores it (the layout is the prompt's, not the tower's)."""
    from vlmlab.data.sources import load_source
    from vlmlab.train.vision_cache import stage_key

    tiny_raw["train"]["stages"].insert(0, {"name": "vision-pretrain", "max_steps": 1, "lr": {"vision": 1e-3}})
    before = config_from_dict(tiny_raw)
    tiny_raw["data"]["image"]["position"] = "after"
    after = config_from_dict(tiny_raw)
    assert stage_key(before, 0) == stage_key(after, 0)
    train = load_training_items(after)
    _, evaluation = load_source(after.data.eval[0], "data.eval.0", after.data.image)
    assert all(it.image_at_end for it in train + evaluation)
    assert not any(it.image_at_end for it in load_training_items(before))

    model = build_model(after, texts=[t for it in train for turn in it.turns for t in turn])
    data = VQADataset(train[:4], model.llm, after.data.image, model.num_image_tokens, with_answers=True)
    ids = list(data[0].ids)
    start, length = data.vision_span(0)
    assert set(ids[start : start + length]) == {model.llm.image_token_id}
    words = train[0].question.split()[-1]
    assert words in model.llm.tokenizer.decode(ids[:start])  # the question comes first, then the image's tokens
    assert words not in model.llm.tokenizer.decode(ids[start + length :])

    tiny_raw["data"]["train"] = {"task": "llava-json", "split": "train", "path": str(write_tiny_mix(tmp_path / "mix"))}
    records = load_training_items(config_from_dict(tiny_raw))  # a LLaVA file places its images
    assert any(not it.image_at_end for it in records if it.image is not None)
