"""The prompt-length pre-flight of evaluation and probes: a prompt that would not fit the model's context (its
vision tokens and the answer's room included) is cut or refused, as its task says, before anything is allocated.

Every benchmark task refuses (an over-long question there is a broken record: one line, exit 1, naming the item);
`llava-json` cuts (its text-only records are long ShareGPT conversations): the question keeps its head, the
template, image and answer room stay whole, and the count is recorded in the task's notes (metrics.json).
A rendered prompt has at most one token per byte (plus one), so only prompts whose bytes could overflow are
tokenized.
"""

from __future__ import annotations

from dataclasses import replace

from vlmlab.data.items import VQAItem
from vlmlab.errors import DataError
from vlmlab.progress import console

CUT, REFUSE = "cut", "refuse"


def context_length(llm) -> int | None:
    """The backbone's context (positions it was built for), or None when its config does not say."""
    value = getattr(getattr(llm, "lm", None), "config", None)
    value = getattr(value, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def fit_to_context(
    items: list[VQAItem], task, llm, num_image_tokens: int, max_new_tokens: int, name: str
) -> list[VQAItem]:
    """`items` with every prompt fitting `context - max_new_tokens` tokens (vision tokens included): an over-long
    one is cut (`task.overlong_prompts == "cut"`, noted in `task.notes`) or refused (a DataError naming the item
    and the numbers). `name` is how messages call the source (`data.eval.0 (vqa-jsonl/test)`)."""
    context = context_length(llm)
    if context is None:
        return items
    budget = context - max_new_tokens
    policy = getattr(task, "overlong_prompts", REFUSE)
    out, cut = [], []
    for item in items:
        vision = num_image_tokens if item.image is not None else 0
        length = _prompt_tokens(llm, item, vision, budget)
        if length <= budget:
            out.append(item)
            continue
        if policy != CUT:
            raise DataError(
                f"{name}: item {item.item_id}'s prompt is {length:,} tokens ({vision} of them vision tokens), more "
                f"than the model's context of {context:,} less eval.max_new_tokens {max_new_tokens}; {item.task} "
                "refuses over-long prompts: shorten or drop that record"
            )
        shorter = _cut(llm, item, vision, budget)
        if shorter is None:
            raise DataError(
                f"{name}: item {item.item_id}'s prompt does not fit the model's context of {context:,} even with an "
                f"empty question ({vision} vision tokens, eval.max_new_tokens {max_new_tokens})"
            )
        out.append(shorter)
        cut.append(item.item_id)
    if cut:
        notes = getattr(task, "notes", None)
        if isinstance(notes, dict):
            notes["prompts_cut_to_context"] = {"items": len(cut), "context": context, "first": cut[0]}
        console.print(
            f"{name}: {len(cut)} prompts longer than the model's context ({context:,} tokens less "
            f"{max_new_tokens} for the answer) cut to fit (first: {cut[0]}); recorded in metrics.json",
            soft_wrap=True,
            highlight=False,
        )
    return out


def _prompt_tokens(llm, item: VQAItem, vision: int, budget: int) -> int:
    """The prompt's length in tokens with its vision tokens; exact when it could exceed `budget`, else a bound."""
    text = llm.text.render_prompt(item.question, item.image is not None, item.image_at_end)
    bound = len(text.encode("utf-8")) + 1 + vision
    if bound <= budget:
        return bound
    placeholder = 1 if item.image is not None else 0
    return len(llm.text.encode_prompt(item.question, item.image is not None, item.image_at_end)) - placeholder + vision


def _cut(llm, item: VQAItem, vision: int, budget: int) -> VQAItem | None:
    """The item with the longest head of its question that fits (binary search over characters), or None."""

    def fits(k: int) -> bool:
        return _prompt_tokens(llm, replace(item, question=item.question[:k]), vision, budget) <= budget

    if not fits(0):
        return None
    lo, hi = 0, min(len(item.question), 16 * budget)  # a token covers at most ~16 characters of prose
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return replace(item, question=item.question[:lo])
