"""`vlmlab study --launcher`: the launcher block, SLURM job arrays (a stand-in `sbatch`), and a study run through
submitit's LocalExecutor, killed mid-way and submitted again, ending with an in-process run's results."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vlmlab import checkpoint as ckpt
from vlmlab.cli import main
from vlmlab.errors import ConfigError
from vlmlab.launch.jobs import CombineJob, RunJob
from vlmlab.runs import RunDir
from vlmlab.study.launcher import LauncherSpec, minutes, with_overrides
from vlmlab.study.runner import run_study


def write_spec(tmp_path: Path, tiny_raw: dict, **fields) -> Path:
    base = copy.deepcopy(tiny_raw)
    base["train"].update(checkpoint_every=2)
    base["train"]["stages"][1]["max_steps"] = 24
    spec = {
        "name": "launch",
        "base": base,
        "factors": {
            "proj": {
                "keys": ["model.projector.id"],
                "levels": {"mlp": {"model.projector.id": "gelu-mlp"}, "linear": {"model.projector.id": "linear"}},
            }
        },
        "seeds": [0],
        "eval": {"blind": False},
        **fields,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ----- the launcher block ----------------------------------------------------------------------------------------
def test_times_read_as_slurm_reads_them_and_unquoted_yaml_is_refused():
    assert [minutes(t, "t") for t in ("90", "45:00", "12:00:00", "2-00:00:00", "1-12", "12h", "90m", "1.5d")] == [
        90,
        45,
        720,
        2880,
        2160,
        720,
        90,
        2160,
    ]
    with pytest.raises(ConfigError, match="launcher.time: 43200: write a time as a quoted string"):
        with_overrides(LauncherSpec(), {"time": 43200})  # what YAML makes of an unquoted 12:00:00


def test_per_variant_resources_override_the_defaults():
    launcher = with_overrides(
        LauncherSpec(partition="gpu", gpus_per_node=8),
        {"variants.big.nodes": 2, "variants.big.time": "2d", "combine.partition": "debug"},
    )
    big, other, combine = launcher.for_variant("big"), launcher.for_variant("small"), launcher.for_variant(None)
    assert (big.partition, big.gpus_per_node, big.nodes, big.time) == ("gpu", 8, 2, "2d")
    assert (other.nodes, other.time) == (1, "auto")
    assert (combine.partition, combine.gpus_per_node, combine.time) == ("debug", 1, "04:00:00")
    with pytest.raises(ConfigError, match="launcher.variants.big.gpu: unknown key"):
        with_overrides(launcher, {"variants.big.gpu": "h100-80gb"})


def test_jobs_requeue_themselves_with_the_same_call():
    """On preemption or timeout submitit asks the job for its next submission: the same run, resumed on disk."""
    job = RunJob()
    again = job.checkpoint("s.yaml", "out", "gen3", 1, None)
    assert again.function is job and again.args == ("s.yaml", "out", "gen3", 1, None)
    assert CombineJob().checkpoint("s.yaml", "out").args == ("s.yaml", "out")


def test_a_run_on_several_gpus_is_accelerate_launch_on_each_node(tmp_path, tiny_raw, monkeypatch):
    """The job's command: the strategy's shipped accelerate config over nodes x GPUs, this node's rank, the first
    node as the rendezvous, and this module's `main` for the run."""
    import submitit

    from vlmlab.launch.submit import _shape

    launcher = with_overrides(LauncherSpec(), {"gpus_per_node": 4, "nodes": 2, "strategy": "fsdp", "time": "1h"})
    shape = _shape(launcher.for_variant("x"), launcher, "slurm", None, tmp_path)
    assert shape.command[shape.command.index("--num_processes") + 1] == "8"
    assert shape.command[shape.command.index("--config_file") + 1].endswith("configs/accelerate/fsdp.yaml")
    env = type("Env", (), {"job_id": "4242_3", "node": 1, "hostnames": ["head", "n2"]})()
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: env)
    seen = []
    monkeypatch.setattr(
        subprocess, "run", lambda argv, check: seen.append(argv) or subprocess.CompletedProcess(argv, 0)
    )
    assert RunJob()("s.yaml", "out", "gen3", 1, list(shape.command)) == "complete"
    argv = seen[0]
    assert argv[argv.index("--machine_rank") + 1] == "1" and argv[argv.index("--main_process_ip") + 1] == "head"
    assert argv[-6:] == ["-m", "vlmlab.launch.jobs", "s.yaml", "out", "gen3", "1"]
    # the submitting command's grants travel with the job (a job never reads one from the study's files)
    RunJob()("s.yaml", "out", "gen3", 1, list(shape.command), ("trust_remote_code",))
    assert seen[1][-7:] == ["-m", "vlmlab.launch.jobs", "s.yaml", "out", "gen3", "1", "trust_remote_code"]


def test_jobs_run_with_the_grants_of_the_submitting_command_and_no_others():
    from vlmlab import grants
    from vlmlab.grants import allowed

    assert allowed() == ()
    with grants.granted("allow_pickle"):
        assert allowed() == ("allow_pickle",)
    assert not grants.allows("allow_pickle")


# ----- SLURM, with stand-ins for sbatch, srun and sacct -------------------------------------------------------------
FAKE_SBATCH = """#!/usr/bin/env bash
dir="$(dirname "$0")"
n=$(( $(cat "$dir/counter" 2>/dev/null || echo 100) + 1 ))
echo $n > "$dir/counter"
cp "$1" "$dir/sbatch-$n.sh"
echo "Submitted batch job $n"
"""
FAKE_SACCT = """#!/usr/bin/env bash
echo "JobID|State|NodeList"
for id in "$@"; do case "$id" in -*) ;; [0-9]*) echo "$id|$(cat "$(dirname "$0")/state")|"; echo "${id}_0|$(cat "$(dirname "$0")/state")|"; echo "${id}_1|$(cat "$(dirname "$0")/state")|";; esac; done
"""


def test_slurm_submission_is_arrays_then_a_combine_job_after_them(tmp_path, tiny_raw, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", "#!/usr/bin/env bash\n"), ("sacct", FAKE_SACCT)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "state").write_text("PENDING")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    launcher = {"partition": "gpu", "account": "lab", "gpus_per_node": 1, "sbatch": {"mail-type": "END"}}
    launcher["variants"] = {"linear": {"gpus_per_node": 2, "time": "3h"}}
    spec = write_spec(tmp_path, tiny_raw, launcher=launcher, seeds=[0, 1])
    out = tmp_path / "s"
    assert main(["study", str(spec), "--out", str(out), "--launcher", "slurm", "--account", "other"]) == 0
    said = capsys.readouterr().err
    assert "0 of 4 runs complete; submitting 4" in said and "job 103 (after 101, 102)" in said
    assert "mlp/seed-1: job 101_1" in said and "linear/seed-0: job 102_0" in said
    mlp, linear, combine = ((bin_dir / f"sbatch-{n}.sh").read_text() for n in (101, 102, 103))
    for script in (mlp, linear):  # one array per set of resources, the seeds its tasks
        assert "#SBATCH --array=0-1%2" in script and "#SBATCH --partition=gpu" in script
        assert "#SBATCH --account=other" in script and "#SBATCH --mail-type=END" in script
    assert "#SBATCH --gpus-per-node=1" in mlp and "#SBATCH --cpus-per-task=8" in mlp
    assert "#SBATCH --time=30" in mlp  # auto: the plan's minutes for this tiny run (floor: 30)
    assert "#SBATCH --gpus-per-node=2" in linear and "#SBATCH --time=180" in linear
    assert "#SBATCH --cpus-per-task=16" in linear
    assert "#SBATCH --dependency=afterany:101:102" in combine and "#SBATCH --time=240" in combine
    assert "--array" not in combine
    assert (out / "study.yaml").is_file() and not (out / "complete.json").exists()
    # a second submission while those jobs are queued would double them: refused
    code = main(["study", str(spec), "--out", str(out), "--launcher", "slurm"])
    assert code == 4 and "jobs of an earlier submission are still queued or running" in capsys.readouterr().err
    (bin_dir / "state").write_text("FAILED")
    assert main(["study", str(spec), "--out", str(out), "--launcher", "slurm"]) == 0
    assert "submitting 4" in capsys.readouterr().err


def test_slurm_launcher_on_a_machine_without_slurm_is_one_line(tmp_path, tiny_raw, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    spec = write_spec(tmp_path, tiny_raw, launcher={"time": "1h"})
    code = main(["study", str(spec), "--out", str(tmp_path / "s"), "--launcher", "slurm"])
    err = capsys.readouterr().err
    assert code == 3 and '--launcher slurm: Could not detect "srun"' in err and "Traceback" not in err


# ----- the local executor: kill mid-way, submit again -------------------------------------------------------------
def _wait_for(condition, proc, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the submission ended before {what}: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_local_launcher_killed_then_resubmitted_ends_as_an_in_process_study(tmp_path, tiny_raw, capsys):
    spec = write_spec(tmp_path, tiny_raw, launcher={"gpus_per_node": 0})
    ref = run_study(spec, tmp_path / "ref")  # the in-process study the jobs must reproduce
    out = tmp_path / "local"
    mlp, linear = (RunDir(out / ref.dir.run(name, 0).path.relative_to(ref.dir.path)) for name in ("mlp", "linear"))
    shutil.copytree(ref.dir.run("mlp", 0).path, mlp.path)  # one run already complete: submissions skip it
    first = subprocess.Popen(
        [sys.executable, "-m", "vlmlab", "study", str(spec), "--out", str(out), "--launcher", "local"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, VLMLAB_NO_PROGRESS="1"),
        start_new_session=True,  # its own process group: the submitter, submitit's controller and the job
    )

    def mid_finetune() -> bool:
        return any(
            c.name.startswith("step-01") and (c / ckpt.STATE).is_file() for c in linear.checkpoints.glob("step-*")
        )

    try:
        _wait_for(mid_finetune, first, 600, "the run's first finetune checkpoint")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # everything the submission started, at once
        first.wait(timeout=30)
    assert "1 of 2 runs complete; submitting 1 and the combine job" in first.stderr.read().decode()
    assert not linear.final.exists(), "the run finished before it was killed: nothing was tested"
    assert not (out / "complete.json").exists()
    done_before = mlp.done.stat().st_mtime_ns

    assert main(["study", str(spec), "--out", str(out), "--launcher", "local"]) == 0
    assert "1 of 2 runs complete; submitting 1 and the combine job" in capsys.readouterr().err
    assert mlp.done.stat().st_mtime_ns == done_before  # the complete run was not run again
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), pd.read_parquet(ref.dir.results))
    assert (out / "report.html").is_file() and (out / "complete.json").is_file()
    assert main(["study", str(spec), "--out", str(out), "--launcher", "local"]) == 0
    assert "every run is complete and the report written; nothing to submit" in capsys.readouterr().err
    # the finished study as the pilot of a larger one: the noise of `linear - mlp` per task, and what it implies
    plan = tmp_path / "plan.json"
    assert main(["study", str(spec), "--plan", "--pilot", str(out), "--effect", "0.05", "--plan-json", str(plan)]) == 0
    (row,) = json.loads(plan.read_text())["power"]
    assert (row["comparison"], row["task"], row["pilot"]["questions"], row["pilot"]["seeds"]) == (
        "linear − mlp",
        "easy-vqa",
        24,
        1,
    )
    assert row["questions"] == 24 and row["seeds"] == 1
    assert row["mde"] == pytest.approx(2.8016 * row["pilot"]["sd_paired"] / 24**0.5, rel=1e-4)  # one seed: no share
