"""`image-folder`: an ImageNet-style directory `<path>/<split>/<class>/<image>` as classification items."""

from __future__ import annotations

from pathlib import Path

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.local_files import take
from vlmlab.errors import ConfigError, DataError
from vlmlab.registry import register_task

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
QUESTION = "what is in the image?"


@register_task("image-folder")
class ImageFolder(Task):
    """Class folders under each split (`train/`, `val/`, ...): the vision-pretrain stage's `class` label, or a
    one-word VQA task (`what is in the image?` → the class name). Files that leave `path` are refused."""

    splits = ("train", "val", "test")

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        if path is None:
            raise ConfigError("path", "image-folder needs the dataset root (holding <split>/<class>/<image>)")
        root = Path(path).resolve()
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"{split_dir}: no such split directory (expected {root}/<split>/<class>/<image>)")

        def items():
            for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
                for image in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in EXTENSIONS):
                    resolved = image.resolve()
                    if not resolved.is_relative_to(root):
                        raise DataError(f"{image}: links outside the dataset directory {root}")
                    yield VQAItem(
                        item_id=f"{split}-{class_dir.name}/{image.name}",
                        task="image-folder",
                        category=class_dir.name,
                        question=QUESTION,
                        answer=class_dir.name,
                        image=str(resolved),
                    )

        return take(items(), limit, f"{split_dir}: no images in class folders")

    def image_labels(self, items: list[VQAItem]) -> dict[str, dict[str, str]]:
        return {item.image: {"class": item.answer} for item in items}
