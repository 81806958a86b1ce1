"""`model.box_tokens`: boxes as one location token per coordinate, in training and back to text before scoring."""

from __future__ import annotations

import copy

import pandas as pd
import torch
import yaml

from vlmlab.cli import main
from vlmlab.config import config_from_dict
from vlmlab.data.shapes_world import generate
from vlmlab.models.build import build_model
from vlmlab.models.llm.box_tokens import LOC_TOKENS, from_tokens, to_tokens
from vlmlab.runs import load_run_model


def test_box_text_and_location_tokens_round_trip_and_malformed_output_stays_a_format_error():
    assert to_tokens("[12, 3, 45, 99]") == "<loc_12><loc_03><loc_45><loc_99>"
    assert from_tokens("<loc_12><loc_03><loc_45><loc_99>") == "[12, 3, 45, 99]"
    assert from_tokens("<loc_12> <loc_03> <loc_45> <loc_99>") == "[12, 3, 45, 99]"  # decoders may space them
    assert to_tokens("yes") == "yes" and to_tokens("[1, 2, 3]") == "[1, 2, 3]"  # not a box: untouched
    assert from_tokens("<loc_12><loc_03>") == "<loc_12><loc_03>"  # half a box: left as is, so it does not parse
    for box in ("[0, 0, 99, 99]", "[5, 60, 7, 8]"):
        assert from_tokens(to_tokens(box)) == box


def test_box_tokens_add_one_token_per_coordinate_and_leave_the_other_parts_unchanged(tiny_raw):
    plain = build_model(config_from_dict(tiny_raw), texts=["what colour is it", "[1, 2, 3, 4]"])
    raw = copy.deepcopy(tiny_raw)
    raw["model"]["box_tokens"] = True
    model = build_model(config_from_dict(raw), texts=["what colour is it", "[1, 2, 3, 4]"])
    tok = model.llm.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in LOC_TOKENS]
    assert len(set(ids)) == 100 and model.llm.lm.get_input_embeddings().num_embeddings >= len(tok)
    assert model.llm.lm.get_output_embeddings().out_features == model.llm.lm.get_input_embeddings().num_embeddings
    answer = model.llm.encode_answer("[12, 3, 45, 99]")
    assert answer[-5:] == [ids[12], ids[3], ids[45], ids[99], model.llm.stop_token_id]
    assert model.llm.decode([ids[12], ids[3], ids[45], ids[99]]) == "[12, 3, 45, 99]"
    # the vision tower and the projector are initialized as without the option (it is applied after every part)
    for name in ("vision", "projector"):
        a, b = getattr(plain, name).state_dict(), getattr(model, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    # a multi-turn conversation supervises the box turns as tokens too
    ids_c, labels = model.llm.encode_conversation([("Give the box of the red circle.", "[1, 2, 3, 4]"), ("Q?", "yes")])
    supervised = [i for i in labels if i != -100]
    box = [ids[1], ids[2], ids[3], ids[4]]
    assert any(supervised[i : i + 4] == box for i in range(len(supervised)))


def test_a_run_with_box_tokens_trains_saves_and_is_scored_as_box_text(tiny_raw, tmp_path):
    data = tmp_path / "shapes"
    generate(data, seed=0, n=40, size=32)
    raw = copy.deepcopy(tiny_raw)
    raw["model"]["box_tokens"] = True
    raw["data"]["train"] = [{"task": "shapes-world-boxes", "split": "train", "path": str(data)}]
    raw["data"]["eval"] = [{"task": "shapes-grounding", "split": "test", "path": str(data)}]
    raw["eval"]["max_new_tokens"] = 8
    config = tmp_path / "boxes.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    assert "<loc_42>" in (run / "tokenizer" / "tokenizer.json").read_text()
    predictions = pd.read_parquet(run / "predictions.parquet")
    assert not predictions["prediction"].str.contains("<loc_").any()  # scored as text: tokens never reach records
    assert predictions["answer"].str.fullmatch(r"\[\d+, \d+, \d+, \d+\]").all()
    # the saved config keeps the option, and the reloaded model decodes location tokens back to box text
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["box_tokens"] is True
    model, _ = load_run_model(run)
    ids = [model.llm.tokenizer.convert_tokens_to_ids(t) for t in ("<loc_07>", "<loc_30>", "<loc_41>", "<loc_99>")]
    assert model.llm.decode(ids) == "[7, 30, 41, 99]"
    # evaluating the saved run again rebuilds the grown embeddings from its tokenizer and gives the same answers
    (run / "predictions.parquet").unlink()
    assert main(["eval", str(run)]) == 0
    again = pd.read_parquet(run / "predictions.parquet")
    assert again["prediction"].tolist() == predictions["prediction"].tolist()


def test_a_config_without_box_tokens_resolves_as_before(tiny_raw):
    """The option is written only when set: configs saved before it existed resolve (and hash) as they did."""
    assert "box_tokens" not in config_from_dict(tiny_raw).resolved()["model"]
