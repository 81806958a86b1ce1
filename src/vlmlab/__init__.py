"""vlmlab: controlled backbone studies of vision-language models."""

__version__ = "0.1.0"
