"""`vlmlab study --jobs N`: the runs of a study trained by worker processes, each run once, deterministically."""

from __future__ import annotations

import pandas as pd
import torch

from test_study import write_spec
from vlmlab.cli import main
from vlmlab.parts import load_builtin_parts
from vlmlab.study.runner import run_study


def test_jobs_train_every_run_once_as_one_thread_would(tmp_path, tiny_raw, capfd):
    """Two workers of one thread each train the two runs, each once; the predictions are those of the same study
    trained in turn with one thread (`train.threads: 1`), so they do not depend on which worker took a run."""
    spec = write_spec(tmp_path, tiny_raw, eval={"blind": False})
    run_study(spec, tmp_path / "a", jobs=2, prepare_process=load_builtin_parts)
    err = capfd.readouterr().err
    assert "2 runs in 2 processes of 1 thread(s) each" in err
    started = [line for line in err.splitlines() if line.endswith(": training")]
    assert sorted(line.split(": ")[1] for line in started) == ["gen1/seed-0", "gen3/seed-0"]  # each run once
    assert len({line.split(": ")[0] for line in started}) == 2  # by both workers
    assert (tmp_path / "a" / "complete.json").is_file()
    assert main(["study", str(spec), "--out", str(tmp_path / "a"), "--jobs", "2"]) == 0  # complete: nothing to do
    assert "processes" not in capfd.readouterr().err
    one_thread = write_spec(tmp_path, tiny_raw, eval={"blind": False}, set={"train.threads": 1})
    threads = torch.get_num_threads()
    try:
        run_study(one_thread, tmp_path / "b")
    finally:
        torch.set_num_threads(threads)  # train.threads sets the process's threads
    a, b = (pd.read_parquet(tmp_path / d / "results.parquet") for d in ("a", "b"))
    assert len(a) == 2 * 24
    pd.testing.assert_frame_equal(a, b)
