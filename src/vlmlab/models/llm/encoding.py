"""Text as a backbone sees it: chat-template rendering and tokenization of prompts, answers and conversations.

A `TextEncoder` holds only the tokenizer and the prompt format (no weights), so data loader workers carry it
cheaply; `LanguageBackbone.text` is the backbone's own.
"""

from __future__ import annotations

import functools

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from vlmlab.bounded import shorten
from vlmlab.errors import UserError
from vlmlab.models.llm.box_tokens import from_tokens, to_tokens
from vlmlab.models.llm.prompts import PromptFormat, conversation_messages, user_message

IGNORE_INDEX = -100  # the label of a position that is not supervised (torch's cross-entropy default)
MAX_TEMPLATE = 256 << 10  # characters of a chat template (real ones are 1-15 KiB)


@functools.lru_cache(maxsize=64)
def sandboxed(template: str) -> str:
    """`template`, once it is known to render in jinja2's ImmutableSandboxedEnvironment (transformers compiles
    chat templates there: no attribute of Python internals, no mutation of what it is given, no file or
    module access; `range` capped at 100,000). A template over MAX_TEMPLATE characters, or a transformers that
    would compile it outside the sandbox, is refused in one line."""
    if len(template) > MAX_TEMPLATE:
        raise UserError(f"model.llm: a chat template of {len(template):,} characters (at most {MAX_TEMPLATE:,})")
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        compiled = _compile_jinja_template(template)
    except TemplateError as exc:
        raise UserError(f"model.llm: not a valid chat template ({shorten(str(exc), 160)})") from None
    if not isinstance(compiled.environment, ImmutableSandboxedEnvironment):
        raise UserError("model.llm: this transformers renders chat templates outside jinja2's sandbox; refusing")
    return template


class TextEncoder:
    """Renders and tokenizes with one tokenizer and chat template; every training and evaluation sequence of a
    backbone is built here, so train and eval prompts never drift."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat, image_token_id: int, stop_token_id: int
    ):
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.image_token_id = image_token_id
        self.stop_token_id = stop_token_id
        self.stop_token = tokenizer.convert_ids_to_tokens(stop_token_id)
        self.pad_token_id = tokenizer.pad_token_id
        self.box_tokens = False  # boxes in answers as location tokens (`model.box_tokens`, set by add_box_tokens)

    def _answer(self, text: str) -> str:
        return to_tokens(text) if self.box_tokens else text

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        """The messages in the chat template, rendered by transformers in jinja2's sandbox (`sandboxed`): a template
        from a run directory can read the messages it is given and nothing else; one that tries more is one line."""
        template = sandboxed(self.prompt.chat_template)
        try:
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=generation_prompt, tokenize=False, chat_template=template
            )
        except TemplateError as exc:
            raise UserError(
                f"model.llm: the {self.prompt.name} chat template failed to render ({type(exc).__name__}: "
                f"{shorten(str(exc), 160)})"
            ) from None

    def render_prompt(self, question: str, image: bool = True, image_at_end: bool = False) -> str:
        """The prompt text up to where the answer starts (contains one `<image>` unless `image` is False)."""
        return self.render(user_message(question, image, image_at_end), generation_prompt=True)

    def encode_prompt(self, question: str, image: bool = True, image_at_end: bool = False) -> list[int]:
        return self._tokens(self.render_prompt(question, image, image_at_end))

    def encode_conversation(
        self, turns: list[tuple[str, str]], image: bool = True, image_at_end: bool = False
    ) -> tuple[list[int], list[int]]:
        """(ids, labels) of a whole conversation in the backbone's chat template, as LLaVA's `preprocess` builds
        them: every assistant turn and its stop token supervised, the system prompt, user turns and the
        template's own markers masked (-100). The text is rendered once per turn boundary and tokenized piece by
        piece, so a one-turn conversation is exactly `encode_prompt(q) + encode_answer(a)` (what evaluation
        prompts with)."""
        messages = conversation_messages([(q, self._answer(a)) for q, a in turns], image, image_at_end)
        ids: list[int] = []
        labels: list[int] = []
        done = ""  # the text rendered so far
        for t in range(len(turns)):
            prompt = self.render(messages[: 2 * t + 1], generation_prompt=True)
            full = self.render(messages[: 2 * t + 2], generation_prompt=False)
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise UserError(
                    f"model.llm: the {self.prompt.name} chat template does not render a conversation as a sequence "
                    "of its turns (a later turn changes the text before it); multi-turn training needs one that does"
                )
            segment = self._tokens(prompt[len(done) :])
            answer = full[len(prompt) :]
            stop = self.stop_token
            answer = answer[: -len(stop)] if answer.endswith(stop) else answer
            supervised = self._tokens(answer) + [self.stop_token_id]
            ids += segment + supervised
            labels += [IGNORE_INDEX] * len(segment) + supervised
            done = full
        return ids, labels

    def encode_answer(self, answer: str) -> list[int]:
        """Answer tokens followed by the stop token (these are the supervised positions)."""
        return self._tokens(self.prompt.answer_prefix + self._answer(answer)) + [self.stop_token_id]

    def decode(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return from_tokens(text) if self.box_tokens else text
