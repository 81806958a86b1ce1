"""`<launcher folder>/submissions.jsonl`: the job ids of each submission, and whether any of them is still queued
or running (a second submission of the study waits for them rather than doubling them)."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

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
    active = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[-RECENT:]:
        try:
            entry = json.loads(line) if len(line) <= MAX_LINE else None
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("runs", {}), dict):
            continue
        for job_id in filter(None, [*entry.get("runs", {}).values(), entry.get("combine")]):
            if _active(folder, entry.get("cluster"), str(job_id)):
                active.append(str(job_id))
    if active:
        raise UserError(
            f"{folder}: jobs of an earlier submission are still queued or running ({', '.join(active[:8])}); "
            "wait for them (complete runs are then skipped) or cancel them first",
            exit_code=EXIT_BUSY,
        )


def _active(folder: Path, cluster: Any, job_id: str) -> bool:
    if cluster == "local":  # a local job's id is its controller's pid
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
    import submitit

    try:
        return submitit.SlurmJob(folder, job_id).state.upper() in ACTIVE
    except Exception:  # no sacct here, or a forgotten job: the run's lock still guards against a second writer
        return False
