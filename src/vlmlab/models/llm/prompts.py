"""Prompt formats (chat templates) that belong to an LLM backbone, not to the task."""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class PromptFormat:
    """A chat template (Jinja, as HF tokenizers store it) plus how an answer is appended and ended.

    Training appends `answer_prefix + answer` and the stop token to the rendered prompt; generation
    stops at the stop token. Both paths use the same rendering, so train and eval prompts never drift.
    """

    name: str
    chat_template: str
    answer_prefix: str
    stop_token: str | None = None  # None = the tokenizer's eos_token


VICUNA = PromptFormat(
    name="vicuna",
    chat_template=(
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }} "
        "{% else %}ASSISTANT: {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    ),
    answer_prefix=" ",
)

# LLaVA-1.5's `conv_vicuna_v1` (what its released checkpoints were trained with): vicuna plus its system line
LLAVA_V1 = PromptFormat(
    name="llava-v1",
    chat_template=(
        "{{ bos_token }}A chat between a curious human and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the human's questions. "
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }} "
        "{% else %}ASSISTANT: {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    ),
    answer_prefix=" ",
)

LLAMA3 = PromptFormat(
    name="llama3",
    chat_template=(
        "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
    answer_prefix="",
    stop_token="<|eot_id|>",
)

FORMATS = {f.name: f for f in (VICUNA, LLAVA_V1, LLAMA3)}


def user_message(question: str, image: bool = True, image_at_end: bool = False) -> list[dict[str, str]]:
    """The single user turn every task uses: the image placeholder, then the question (or after it, as some
    of LLaVA's training records have it; or none, for a text-only record)."""
    if not image:
        return [{"role": "user", "content": question}]
    content = f"{question}\n{IMAGE_TOKEN}" if image_at_end else f"{IMAGE_TOKEN}\n{question}"
    return [{"role": "user", "content": content}]


def conversation_messages(
    turns: list[tuple[str, str]], image: bool = True, image_at_end: bool = False
) -> list[dict[str, str]]:
    """A whole conversation as chat messages: the image placeholder in the first user turn (LLaVA's layout),
    then user/assistant turns in order."""
    messages: list[dict[str, str]] = []
    for t, (question, answer) in enumerate(turns):
        messages += user_message(question, image, image_at_end) if t == 0 else [{"role": "user", "content": question}]
        messages.append({"role": "assistant", "content": answer})
    return messages
