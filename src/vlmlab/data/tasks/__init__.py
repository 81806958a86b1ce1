"""Tasks (datasets + scoring); importing this package registers every built-in task."""

from vlmlab.data.tasks import (  # noqa: F401
    easy_vqa,
    gqa,
    image_folder,
    llava_json,
    pope,
    refcoco,
    shapes_boxes,
    shapes_chat,
    shapes_world,
    textvqa,
    vizwiz,
    vqa_jsonl,
    vqav2,
)
from vlmlab.data.tasks.base import Task  # noqa: F401
