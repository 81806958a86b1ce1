"""Routing strategies on an unmodified LLM: the layer runner, FastV's pruning, generation with a KV cache."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vlmlab.config import config_from_dict
from vlmlab.evaluation.generate import greedy_generate
from vlmlab.models.build import build_model
from vlmlab.models.routing.driver import LayerRunner
from vlmlab.models.vlm import position_ids_from_mask

TEXTS = ["what is the shape?", "what color is the shape?", "red", "circle", "yes", "no"]


def _model(tiny_raw, routing=None, layers=3):
    tiny_raw["model"]["llm"]["num_layers"] = layers
    if routing:
        tiny_raw["model"]["routing"] = routing
    cfg = config_from_dict(tiny_raw)
    return build_model(cfg, texts=TEXTS).eval(), cfg


def _batch(model, cfg, n=6):
    from vlmlab.data.dataset import VQADataset
    from vlmlab.data.sources import load_source

    items = load_source(cfg.data.eval[0], "data.eval.0", cfg.data.image)[1][:n]
    data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=False)
    return data.collate([data[i] for i in range(n)])


def _tokens_per_layer(model, b) -> dict[int, int]:
    """How many tokens each decoder layer received in one forward pass."""
    seen = {}
    hooks = [
        layer.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].shape[1]))
        for i, layer in enumerate(model.llm.decoder.layers)
    ]
    _states(model, b)
    for h in hooks:
        h.remove()
    return seen


def _states(model, b):
    with torch.no_grad():
        return model(b.input_ids, b.attention_mask, b.image_mask, b.pixel_values).hidden_states


def test_layer_runner_reproduces_the_plain_decoder(tiny_raw):
    model, cfg = _model(tiny_raw)
    b = _batch(model, cfg)
    embeds = model.embed(b.input_ids, b.image_mask, b.pixel_values)
    pos = position_ids_from_mask(b.attention_mask)
    run = LayerRunner(model.llm)
    with torch.no_grad():
        ours = run.norm(run.run(embeds, pos, b.attention_mask, range(run.num_layers)))
        plain = model.llm.decoder(
            inputs_embeds=embeds, attention_mask=b.attention_mask, position_ids=pos
        ).last_hidden_state
    real = b.attention_mask.bool()
    torch.testing.assert_close(ours[real], plain[real], rtol=1e-5, atol=1e-5)


def test_fastv_with_nothing_dropped_equals_full(tiny_raw):
    full, cfg = _model(tiny_raw)
    fastv, _ = _model(tiny_raw, {"id": "fastv", "layer": 1, "ratio": 0.0})
    b = _batch(full, cfg)
    real = b.attention_mask.bool()
    torch.testing.assert_close(_states(fastv, b)[real], _states(full, b)[real], rtol=1e-5, atol=1e-5)
    assert greedy_generate(fastv, b, 4).token_ids == greedy_generate(full, b, 4).token_ids


def test_fastv_physically_drops_image_tokens_and_saves_flops(tiny_raw):
    tiny_raw["model"]["vision"]["patch_size"] = 4  # 64 image tokens: most of the sequence, as in real VLMs
    full, cfg = _model(tiny_raw)
    fastv, _ = _model(tiny_raw, {"id": "fastv", "layer": 1, "ratio": 0.5})
    b = _batch(full, cfg)
    seen = _tokens_per_layer(fastv, b)
    n_image = int(b.image_mask[0].sum())
    assert seen[0] == b.input_ids.shape[1] and seen[1] == seen[2] == b.input_ids.shape[1] - n_image // 2
    flops = {}
    for name, m in (("full", full), ("fastv", fastv)):
        with FlopCounterMode(display=False) as counter:
            _states(m, b)
        flops[name] = counter.get_total_flops()
    assert flops["fastv"] < flops["full"]
    gen = greedy_generate(fastv, b, 5)  # the pruned KV cache decodes
    assert len(gen.token_ids) == 6 and all(0 <= c <= 1 for c in gen.confidence)


def test_fastv_trains_and_rejects_a_layer_beyond_the_llm(tiny_raw):
    from vlmlab.errors import ConfigError

    model, cfg = _model(tiny_raw, {"id": "fastv", "layer": 1, "ratio": 0.5})
    from vlmlab.data.dataset import VQADataset
    from vlmlab.data.sources import load_training_items

    items = load_training_items(cfg)[:4]
    data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=True)
    b = data.collate([data[i] for i in range(4)])
    model.train()
    loss = model(b.input_ids, b.attention_mask, b.image_mask, b.pixel_values, b.labels).loss
    loss.backward()
    assert torch.isfinite(loss) and model.projector.net[0].weight.grad is not None
    with pytest.raises(ConfigError, match="model.routing.layer"):
        _model(tiny_raw, {"id": "fastv", "layer": 3, "ratio": 0.5})


def test_dpvr_routing_at_the_last_layer_with_an_identity_branch_equals_full(tiny_raw):
    full, cfg = _model(tiny_raw)
    dpvr, _ = _model(tiny_raw, {"id": "dpvr", "layer": 2, "branch_init": "zero-residual"})  # k = L − 1
    b = _batch(full, cfg)
    real = b.attention_mask.bool()
    torch.testing.assert_close(_states(dpvr, b)[real], _states(full, b)[real], rtol=1e-5, atol=1e-5)
    assert greedy_generate(dpvr, b, 4).token_ids == greedy_generate(full, b, 4).token_ids


def test_dpvr_text_layers_see_only_text_and_the_branch_is_one_trainable_layer(tiny_raw):
    tiny_raw["model"]["vision"]["patch_size"] = 4
    dpvr, cfg = _model(tiny_raw, {"id": "dpvr", "layer": 1}, layers=4)
    b = _batch(dpvr, cfg)
    seen = _tokens_per_layer(dpvr, b)
    t, n_image = b.input_ids.shape[1], int(b.image_mask[0].sum())
    assert seen == {0: t, 1: t - n_image, 2: t - n_image, 3: t}  # shared, text-only x2, fused
    one_layer = sum(p.numel() for p in dpvr.llm.decoder.layers[1].parameters())
    assert sum(p.numel() for p in dpvr.routing.parameters()) == one_layer
    # the documented fraction: one decoder layer over the LLM's parameters
    fraction = one_layer / sum(p.numel() for p in dpvr.llm.parameters())
    assert 0 < fraction < 1 / 4
    gen = greedy_generate(dpvr, b, 5)  # the routed KV cache decodes
    assert len(gen.token_ids) == len(b.indices)


def test_dpvr_trains_only_its_branch_when_the_llm_is_frozen(tiny_raw, tmp_path):
    import json

    from vlmlab.train.trainer import Trainer

    tiny_raw["model"]["routing"] = {"id": "dpvr", "layer": 1}
    tiny_raw["train"]["stages"] = [{"name": "finetune", "max_steps": 3, "lr": {"projector": 1e-3, "routing": 1e-3}}]
    cfg = config_from_dict(tiny_raw)
    result = Trainer(cfg, tmp_path / "run", resume=False).run_training()
    trainable = result.trainable["finetune"]
    branch = sum(p.numel() for p in result.model.routing.parameters())
    assert trainable["routing"] == branch and trainable["llm"] == 0 and trainable["vision"] == 0
    from vlmlab.runs import load_run_model

    loaded, _ = load_run_model(tmp_path / "run")  # the branch is saved and restored with the run
    for (_n1, p1), (_n2, p2) in zip(result.model.routing.named_parameters(), loaded.routing.named_parameters()):
        torch.testing.assert_close(p1.cpu(), p2.cpu())
    assert json.dumps(trainable)


@pytest.mark.parametrize(
    "routing",
    [
        {"id": "full"},
        {"id": "fastv", "layer": 1, "ratio": 0.5},
        {"id": "fastv", "layer": 1, "ratio": 0.5, "rank_by": "all-tokens"},
        {"id": "dpvr", "layer": 1},
    ],
)
def test_counted_prefill_flops_match_the_analytic_formula(tiny_raw, routing):
    """Each strategy owns its analytic formula (`prefill_flops`); torch's count of the real forward agrees."""
    from vlmlab.measure.cost import counted_prefill_flops
    from vlmlab.models.routing.cost import Geometry

    tiny_raw["model"]["vision"]["patch_size"] = 4
    model, cfg = _model(tiny_raw, routing, layers=4)
    b = _batch(model, cfg, n=1)  # one prompt: no padding, so the token counts are exact
    n_image = int(b.image_mask.sum())
    g = Geometry.of(model.llm, vision=n_image, text=b.input_ids.shape[1] - n_image)
    analytic = type(model.routing).prefill_flops(model.routing.params, g)
    assert counted_prefill_flops(model, b) == pytest.approx(analytic, rel=0.01)


def test_paper_geometry_gives_the_papers_dpvr_saving():
    from vlmlab.measure.routing_bench import paper_ratios
    from vlmlab.models.routing.cost import PAPER
    from vlmlab.registry import ROUTING

    dpvr, full = ROUTING.get("dpvr"), ROUTING.get("full")
    ratio = dpvr.prefill_flops(dpvr.Params(layer=18), PAPER) / full.prefill_flops(full.Params(), PAPER)
    assert ratio == pytest.approx(0.66, abs=0.01)
    # every registered strategy with a paper setting is reported at the paper's shape, DPVR at its k = 18
    paper = paper_ratios()["strategies"]
    assert paper["dpvr"] == {"params": {"layer": 18}, "over_full": pytest.approx(ratio)}
    assert paper["fastv"]["params"] == {"layer": 2, "ratio": 0.5} and 0.5 < paper["fastv"]["over_full"] < 0.6


def test_dpvr_starts_from_a_trained_full_run_with_its_branch_copied_from_the_trained_layer(tiny_raw, tmp_path):
    from vlmlab.runs import load_run_model
    from vlmlab.train.trainer import Trainer

    Trainer(config_from_dict(tiny_raw), tmp_path / "full", resume=False).run_training()
    trained, _ = load_run_model(tmp_path / "full")
    raw = {**tiny_raw, "name": "dpvr"}
    raw["model"] = {**tiny_raw["model"], "routing": {"id": "dpvr", "layer": 1}, "init_from": str(tmp_path / "full")}
    raw["train"] = {**tiny_raw["train"], "stages": [{"name": "finetune", "max_steps": 1, "lr": {"routing": 1e-9}}]}
    result = Trainer(config_from_dict(raw), tmp_path / "dpvr", resume=False).run_training()
    model = result.model
    for name, p in trained.llm.named_parameters():  # the frozen LLM is the trained one
        torch.testing.assert_close(dict(model.llm.named_parameters())[name].cpu(), p)
    for name, p in trained.llm.decoder.layers[1].named_parameters():  # the branch began as trained layer 1
        torch.testing.assert_close(dict(model.routing.branch.named_parameters())[name].cpu(), p, rtol=1e-4, atol=1e-6)
    bad = {**raw, "model": {**raw["model"], "init_from": str(tmp_path / "nothing")}}
    from vlmlab.errors import UserError

    with pytest.raises(UserError, match=r"model.init_from"):
        Trainer(config_from_dict(bad), tmp_path / "bad", resume=False).run_training()


def test_pareto_front_keeps_only_undominated_variants():
    import pandas as pd

    from vlmlab.analysis.routing_cost import pareto_front

    frame = pd.DataFrame({"cost": [1.0, 0.8, 0.8, 0.5, 0.9], "acc": [0.60, 0.59, 0.55, 0.50, 0.58]})
    assert pareto_front(frame, "cost", "acc").tolist() == [True, True, False, True, False]


def test_builtin_routing_study_is_valid_and_varies_only_the_routing(tmp_path):
    from vlmlab.cli import resolve_study_path
    from vlmlab.study.control import check_config_control
    from vlmlab.study.spec import expand_variants, load_study_spec

    spec, spec_dir = load_study_spec(resolve_study_path("demo-routing"))
    variants = expand_variants(spec, spec_dir, {"shapes": str(tmp_path)})
    control = check_config_control(spec, variants)
    assert [v.name for v in variants] == ["full", "fastv", "dpvr"]
    assert control["declared"] == ["model.routing"] and variants[0].cfg.model.init_from.endswith("gen3/seed-0")
    assert all(v.cfg.train.stages[0].lr["llm"] == 0 for v in variants)  # the LLM stays frozen


def test_a_study_starting_from_a_missing_run_is_refused_before_anything_is_written(tmp_path, capsys):
    import yaml

    from vlmlab.cli import main, resolve_study_path

    spec = yaml.safe_load(resolve_study_path("demo-routing").read_text())
    spec["base"]["model"]["init_from"] = str(tmp_path / "no-such-run")
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "no final weights to start from [model.init_from]" in " ".join(err) and "Traceback" not in " ".join(err)
    assert not (tmp_path / "out").exists()


def test_dpvr_layer_auto_is_the_saturation_layer_of_the_init_run(tiny_raw, tmp_path, monkeypatch, capsys):
    """`layer: auto` is read off the stored attention profile of model.init_from: resolving a config is pure (a
    missing profile is named, not measured); `vlmlab train` measures it first as its own step; the run names
    the k it used."""
    import json

    import yaml

    from vlmlab import runs
    from vlmlab.cli import main
    from vlmlab.errors import ConfigError
    from vlmlab.measure.resolve import MeasurementNeeded, resolve_config, resolve_with_measurements
    from vlmlab.train.trainer import Trainer

    tiny_raw["model"]["llm"]["num_layers"] = 4
    Trainer(config_from_dict(tiny_raw), tmp_path / "full").run_training()
    raw = {
        **tiny_raw,
        "model": {**tiny_raw["model"], "routing": {"id": "dpvr", "layer": "auto"}, "init_from": str(tmp_path / "full")},
    }
    raw["train"] = {**tiny_raw["train"], "stages": [{"name": "finetune", "max_steps": 1, "lr": {"routing": 1e-4}}]}
    raw["model"]["routing"]["threshold"] = 0.99

    # no stored profile: resolution names the measurement it needs and loads no model
    with monkeypatch.context() as patched:
        patched.setattr(runs, "build_model", lambda *a, **k: pytest.fail("resolving a config built a model"))
        with pytest.raises(MeasurementNeeded) as needed:
            resolve_config(config_from_dict(raw))
    assert needed.value.key == "model.routing.layer" and not needed.value.measurement.done()
    # the trainer takes resolved configs only
    with pytest.raises(ConfigError, match="auto is not resolved"):
        Trainer(config_from_dict(raw), tmp_path / "never").run_training()
    # measured as its own step and stored; a threshold every layer is under gives k = 1 (clamped from 0)
    cfg = resolve_with_measurements(config_from_dict(raw))
    profile = needed.value.measurement
    assert cfg.model.routing.params.layer == 1 and profile.done()
    # a profile that saturates at layer 2 (as LLaVA's does at 18): `vlmlab train` gives k = 2, named in config.yaml
    record = json.loads(profile.path.read_text())
    record["share"] = [0.6, 0.3, 0.05, 0.02]
    profile.path.write_text(json.dumps(record))
    raw["model"]["routing"]["threshold"] = 0.1
    (tmp_path / "dpvr.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "dpvr.yaml"), "--out", str(tmp_path / "dpvr"), "--no-eval"]) == 0
    saved = yaml.safe_load((tmp_path / "dpvr" / "config.yaml").read_text())
    assert saved["model"]["routing"]["layer"] == 2
    # a study over such variants: `--check` reads configs and existing files only; without the profile it names
    # the measurement the runner will make before training, and builds no model
    profile.path.unlink()
    levels = {name: {"model.routing.threshold": t} for name, t in (("t10", 0.1), ("t50", 0.5))}
    spec = {
        "name": "auto",
        "base": raw,
        "factors": {"threshold": {"keys": ["model.routing.threshold"], "levels": levels}},
    }
    (tmp_path / "auto.yaml").write_text(yaml.safe_dump(spec))
    with monkeypatch.context() as patched:
        patched.setattr(runs, "build_model", lambda *a, **k: pytest.fail("`vlmlab study --check` built a model"))
        assert main(["study", str(tmp_path / "auto.yaml"), "--out", str(tmp_path / "auto"), "--check"]) == 0
    assert not profile.done() and not (tmp_path / "auto").exists()
    err = capsys.readouterr().err
    assert "control check passed: 2 variants" in err and "model.routing.layer will be read off the" in err
    profile.path.write_text(json.dumps(record))
    # never below the threshold: one line naming the key, the run and its lowest share
    raw["model"]["routing"]["threshold"] = 0.01
    with pytest.raises(
        ConfigError, match=r"model.routing.layer: auto: .* never stays below 0.01 \(lowest 0.020 at layer 3\)"
    ):
        resolve_config(config_from_dict(raw))
    no_init = {**raw, "model": {k: v for k, v in raw["model"].items() if k != "init_from"}}
    with pytest.raises(ConfigError, match="auto needs model.init_from"):
        resolve_config(config_from_dict(no_init))


def test_fastv_all_tokens_ranking_is_the_mean_of_each_tokens_causal_attention(tiny_raw):
    """`rank_by: all-tokens` keeps the image tokens with the most attention averaged over every query (checked
    against eager attention's own weights at layer K), and with R = 0 still equals full."""
    from vlmlab.models.llm.base import eager_attention

    tiny_raw["model"]["vision"]["patch_size"] = 4
    model, cfg = _model(tiny_raw, {"id": "fastv", "layer": 1, "ratio": 0.5, "rank_by": "all-tokens"}, layers=3)
    b = _batch(model, cfg, n=1)  # one row: no padding
    run = LayerRunner(model.llm)
    embeds = model.embed(b.input_ids, b.image_mask, b.pixel_values)
    positions = position_ids_from_mask(b.attention_mask)
    with torch.no_grad():
        hidden = run.run(embeds, positions, b.attention_mask, range(0, 1), None, False)
        keep = model.routing.kept_positions(run, hidden, positions, b.attention_mask, b.image_mask)
        with eager_attention(model.llm.lm):
            out = model.llm.lm(inputs_embeds=embeds, attention_mask=b.attention_mask, output_attentions=True)
    received = out.attentions[1][0].mean(dim=0).mean(dim=0)  # layer K: mean over heads, then over queries
    image = b.image_mask[0].nonzero()[:, 0]
    expected = image[received[image].topk(len(image) // 2).indices].sort().values
    kept_image = torch.tensor([p for p in keep[0].tolist() if b.image_mask[0, p]])
    assert torch.equal(kept_image, expected)
    full, _ = _model(tiny_raw, {"id": "full"}, layers=3)
    none, _ = _model(tiny_raw, {"id": "fastv", "layer": 1, "ratio": 0.0, "rank_by": "all-tokens"}, layers=3)
    b6 = _batch(full, cfg)
    real = b6.attention_mask.bool()
    torch.testing.assert_close(_states(none, b6)[real], _states(full, b6)[real], rtol=1e-5, atol=1e-5)
