"""LLM backbones; importing this package registers every built-in backbone."""

from vlmlab.models.llm import tiny  # noqa: F401, I001  (presets first: listing order)
from vlmlab.models.llm import hf  # noqa: F401
from vlmlab.models.llm.base import LanguageBackbone  # noqa: F401
