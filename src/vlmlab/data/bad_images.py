"""The bad-image policy (`data.on_bad_image`): what an unreadable training image does when training reaches it.

At LLaVA scale reading every image before training is too slow (that is `vlmlab data check`'s job), so a
truncated or corrupt image is found mid-run. `stop` ends the run with a line naming the file (the run stays
resumable); `skip` masks that item's loss, records it, and stops once more than `max_bad_fraction` of the
items were skipped. The record (item -> file) is kept in checkpoints and in `train.json`, and a study compares
it across variants: variants that skipped different items did not train on the same data.
"""

from __future__ import annotations

from vlmlab.config import DataConfig
from vlmlab.errors import DataError

STOP_HINT = "(data.on_bad_image: stop; replace or remove the file, or set data.on_bad_image: skip)"


class BadImages:
    """The items a run skipped for their images, `{item key: image path}`, checked against the stated limit."""

    def __init__(self, data: DataConfig, total_items: int, skipped: dict[str, str] | None = None):
        self.policy = data.on_bad_image
        self.max_fraction = data.max_bad_fraction
        self.total = max(total_items, 1)
        self.skipped: dict[str, str] = dict(skipped or {})

    def add(self, key: str, path: str) -> bool:
        """Record item `key`'s bad image; True when it is new (to log it once). Raises once over the limit."""
        if key in self.skipped:
            return False
        self.skipped[key] = path
        if len(self.skipped) / self.total > self.max_fraction:
            raise DataError(
                f"{path}: unreadable image, and {len(self.skipped)} of {self.total} training items "
                f"({len(self.skipped) / self.total:.2%}) have been skipped for bad images, more than "
                f"data.max_bad_fraction={self.max_fraction:g} allows; run `vlmlab data check` to list them, then fix "
                "or remove them (or raise data.max_bad_fraction)"
            )
        return True

    @property
    def paths(self) -> list[str]:
        """The distinct skipped images, sorted."""
        return sorted(set(self.skipped.values()))

    def record(self) -> dict:
        """What `train.json` and checkpoints keep: the policy, the count, and each skipped item's image."""
        return {"policy": self.policy, "items": len(self.skipped), "skipped": dict(sorted(self.skipped.items()))}


def stop_error(exc: DataError) -> DataError:
    """The `stop` policy's error: the file and how to get past it."""
    return DataError(f"{exc} {STOP_HINT}", exc.exit_code)
