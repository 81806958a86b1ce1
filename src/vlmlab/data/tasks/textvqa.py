"""`textvqa`: TextVQA (questions about text in images), scored as LLaVA-1.5 / the EvalAI challenge score it."""

from __future__ import annotations

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.local_files import field, image_under, read_json, require_path, require_split, take
from vlmlab.errors import DataError
from vlmlab.registry import register_task

LAYOUT = "a directory holding TextVQA_0.5.1_<split>.json and the images in train_images/"
OCR_PROMPT = "{question}\nReference OCR token: {tokens}"  # LLaVA-1.5's question file, with the OCR tokens


class _TextVQA(Task):
    """TextVQA 0.5.1: `path` is a directory holding `TextVQA_0.5.1_{split}.json` (`{"data": [{question_id, question,
    image_id, answers: [10 strings], ocr_tokens?, ...}]}`) and the images `train_images/{image_id}.jpg` (val images
    live there too). The item id is `{split}-{question_id}`; the category is `all`. The score is TextVQA's
    accuracy as LLaVA-1.5 computes it (`vlmlab.metrics.textvqa_accuracy`)."""

    metric = "textvqa_accuracy"
    splits = ("train", "val")
    with_ocr = False

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        root = require_path(path, self.part_id, LAYOUT)
        require_split(split, self.splits, self.part_id)
        if not root.is_dir():
            raise DataError(f"{root}: TextVQA directory not found")
        file = root / f"TextVQA_0.5.1_{split}.json"
        data = field(read_json(file, "TextVQA annotations file"), "data", list, str(file))
        images = root / "train_images"

        def items():
            for index, record in enumerate(data):
                where = f"{file}[data {index}]"
                question = field(record, "question", str, where)
                if self.with_ocr:
                    tokens = [str(t) for t in field(record, "ocr_tokens", list, where)]
                    question = OCR_PROMPT.format(question=question, tokens=", ".join(tokens)) if tokens else question
                answers = tuple(str(a) for a in field(record, "answers", list, where))
                if not answers:
                    raise DataError(f"{where}: no human answers")
                yield VQAItem(
                    item_id=f"{split}-{field(record, 'question_id', (str, int), where)}",
                    task=self.part_id,
                    category="all",
                    question=question,
                    answer=max(set(answers), key=answers.count),  # the most common human answer trains
                    image=image_under(images, f"{field(record, 'image_id', str, where)}.jpg", where),
                    answers=answers,
                    native_id=f"{record['image_id']}/{field(record, 'question', str, where).lower()}",
                )

        return take(items(), limit, f"{file}: no questions")

    def llava_key(self, record: dict) -> str | None:
        """LLaVA's llava_textvqa_val_v051_ocr.jsonl keys on the image (its `question_id` holds the image_id) and the
        question, the first line of `text` (the second when the OCR tokens come first), as eval_textvqa.py joins."""
        if "question_id" not in record or not isinstance(record.get("text"), str):
            return None
        lines = record["text"].split("\n")
        question = lines[1] if record["text"].startswith("Reference OCR token:") and len(lines) > 1 else lines[0]
        return f"{record['question_id']}/{question.lower()}"


@register_task("textvqa")
class TextVQA(_TextVQA):
    """TextVQA without OCR tokens in the prompt (Prismatic's "pure" setting); TextVQA accuracy."""


@register_task("textvqa-ocr")
class TextVQAWithOCR(_TextVQA):
    """TextVQA with the OCR tokens in the prompt, as LLaVA-1.5 evaluates it ("\\nReference OCR token: a, b");
    the records need `ocr_tokens`."""

    with_ocr = True
