"""Tasks (datasets + scoring); importing this package registers every built-in task."""

from vlmlab.data.tasks import easy_vqa, gqa, image_folder, llava_json, pope, refcoco, shapes_world, vqa_jsonl, vqav2  # noqa: F401
from vlmlab.data.tasks.base import Task  # noqa: F401
