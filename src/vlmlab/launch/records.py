"""`<launcher folder>/submissions.jsonl`: the job ids of each submission, and whether any of them is still queued
or running (a second submission of the study waits for them rather than doubling them)."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from vlmlab import io
from vlmlab.errors import EXIT_BUSY, UserError

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD"}
RECENT = 50  # submissions looked at (older ones have long ended)
MAX_LINE = 1 << 20  # a record longer than this is not read


def record(folder: Path, cluster: str, runs: dict[str, str], combine: str | None = None) -> None:
    """Append one line: when, where, and the job id of each run (`variant/seed-s`) and of the combine job."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    io.append_jsonl(folder / "submissions.jsonl", {"time": now, "cluster": cluster, "runs": runs, "combine": combine})


def refuse_while_active(folder: Path) -> None:
    """Stop (exit 4) when jobs of an earlier submission of this study are still queued or running."""
    path = folder / "submissions.jsonl"
    if not path.is_file():
        return
    local, slurm = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[-RECENT:]:
        try:
            entry = json.loads(line) if len(line) <= MAX_LINE else None
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("runs", {}), dict):
            continue
        ids = [str(i) for i in [*entry.get("runs", {}).values(), entry.get("combine")] if i]
        (local if entry.get("cluster") == "local" else slurm).extend(ids)
    active = [i for i in local if _local_active(i)] + _slurm_active(slurm)
    if active:
        raise UserError(
            f"{folder}: jobs of an earlier submission are still queued or running ({', '.join(active[:8])}); "
            "wait for them (complete runs are then skipped) or cancel them first",
            exit_code=EXIT_BUSY,
        )


def _local_active(job_id: str) -> bool:
    """A local job's id is its submitit controller's pid: active while that process lives."""
    try:
        pid = int(job_id)
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError, OverflowError):
        return False
    except PermissionError:
        return True
    try:
        return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def _slurm_active(job_ids: list[str]) -> list[str]:
    """The SLURM jobs among `job_ids` still queued or running, by one `sacct` call (none here: none known active;
    a run's lock still guards against a second writer)."""
    if not job_ids:
        return []
    import submitit

    watcher = submitit.SlurmJob.watcher
    for job_id in job_ids:
        watcher.register_job(job_id)
    watcher.update()  # one sacct for all of them (its errors are logged, not raised)
    return [j for j in job_ids if watcher.get_state(j, mode="cache").upper() in ACTIVE]
