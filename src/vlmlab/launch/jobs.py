"""What runs inside a submitit job: one run of a study (`RunJob`), or the combine step (`CombineJob`).

Both are `submitit.helpers.Checkpointable`: when SLURM preempts a job or its time runs out, submitit asks the
callable for its next submission and requeues it with the same arguments. That is all a run needs, since a
run resumes exactly from its last checkpoint (`train.checkpoint_every`; under FSDP / DeepSpeed the last
stage boundary) and a complete run is skipped. A run on several GPUs starts `accelerate launch` on each
node, which runs this module's `main` in every process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from submitit.helpers import Checkpointable

from vlmlab import grants
from vlmlab.errors import UserError
from vlmlab.parts import load_builtin_parts

PORT_RANGE = (20000, 60000)


class RunJob(Checkpointable):
    """Train and evaluate one run (variant x seed) unless complete; `command` is the `accelerate launch` prefix
    for a run on several processes (None: this process trains); `allowed` the submitting command's grants."""

    def __call__(
        self,
        spec: str,
        out: str,
        variant: str,
        seed: int,
        command: list[str] | None = None,
        allowed: tuple[str, ...] = (),
    ) -> str:
        if command is None:
            load_builtin_parts()
            from vlmlab.study.jobs import run_one

            with grants.granted(*allowed):
                return run_one(spec, out, variant, seed)
        import submitit

        env = submitit.JobEnvironment()
        port = PORT_RANGE[0] + int(str(env.job_id).split("_")[0]) % (PORT_RANGE[1] - PORT_RANGE[0])
        argv = [
            *command,
            "--machine_rank",
            str(env.node),
            "--main_process_ip",
            env.hostnames[0],
            "--main_process_port",
            str(port),
            "-m",
            "vlmlab.launch.jobs",
            spec,
            out,
            variant,
            str(seed),
            *allowed,
        ]
        done = subprocess.run(argv, check=False)
        if done.returncode:
            raise UserError(f"{variant}/seed-{seed}: accelerate launch exited with {done.returncode}")
        return "complete"


class CombineJob(Checkpointable):
    """Once every run is complete: combine the records, compute the analyses, write the report."""

    def __call__(self, spec: str, out: str, allowed: tuple[str, ...] = ()) -> str:
        with grants.granted(*allowed):
            return self._combine(spec, out)

    def _combine(self, spec: str, out: str) -> str:
        load_builtin_parts()
        from vlmlab.cli.pipeline import analyze_and_report
        from vlmlab.study.jobs import missing_runs
        from vlmlab.study.runner import prepare_study, run_study

        missing = missing_runs(prepare_study(spec, out))
        if missing:
            names = ", ".join(v.run_name for v in missing)
            raise UserError(
                f"{len(missing)} runs are not complete ({names}); submit the study again to make them "
                f"(vlmlab study {spec} --out {out} --launcher ...)"
            )
        run_study(spec, out)  # nothing left to train: combines the records, writes complete.json
        _, html = analyze_and_report(out)
        return str(html)


def main(argv: list[str]) -> int:
    """`python -m vlmlab.launch.jobs SPEC OUT VARIANT SEED [GRANT ...]`: one run, in every process `accelerate
    launch` starts, with the submitting command's grants (a user's mistake is one line and its exit code, as from
    the CLI)."""
    from vlmlab.progress import console

    spec, out, variant, seed, *allowed = argv
    load_builtin_parts()
    from vlmlab.study.jobs import run_one

    try:
        with grants.granted(*allowed):
            run_one(Path(spec), Path(out), variant, int(seed))
    except UserError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
