"""Errors a user can cause: reported as one line naming the key or file, never as a traceback."""

from __future__ import annotations

from typing import Any

# exit codes by cause, the same for every command
EXIT_DATA = 1  # the data, a run's or study's files, a numerical fault
EXIT_CONFIG = 2  # a config, spec or command-line value
EXIT_ENVIRONMENT = 3  # the machine: a file that cannot be read or written, a full disk
EXIT_BUSY = 4  # another process is writing the same run or study
EXIT_MEMORY = 5  # the memory pre-flight refused, or memory ran out


def printable(text: str) -> str:
    """`text` with every control character or line break shown escaped (`\\x00`, `\\n`): user text printed in a
    one-line message or a finding never carries a raw NUL, escape sequence or newline."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


class UserError(Exception):
    """A mistake in the user's config, paths or data. `exit_code` 2 is for config/usage errors."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(UserError):
    """A config key with a bad value. The key, the problem and where the config came from are data:

    `key` is the dotted path (`model.llm.id`), `detail` what is wrong with it, `context` what holds the
    config, outermost first (a file, a study variant). The message is `context: key: detail`."""

    def __init__(self, key: str, detail: str, context: tuple[str, ...] = ()):
        self.key, self.detail, self.context = key, detail, tuple(context)
        where = ": ".join(p for p in (*self.context, key) if p)
        super().__init__(f"{where}: {detail}" if where else detail, exit_code=2)

    def under(self, prefix: str) -> ConfigError:
        """The same error for a config nested at `prefix` (`data.eval.0` + `path` -> `data.eval.0.path`)."""
        key = ".".join(p for p in (prefix, self.key) if p)
        return ConfigError(key, self.detail, self.context)

    def within(self, context: str) -> ConfigError:
        """The same error inside a larger whole (`study.yaml`, `variant gen3 (seed 0)`), named before the key."""
        return ConfigError(self.key, self.detail, (context, *self.context))


class DataError(UserError):
    """A dataset file or record that cannot be used; the message names the file (and line)."""


def validation_error(exc: Any, prefix: str = "", context: tuple[str, ...] = ()) -> ConfigError:
    """pydantic's first validation error as a ConfigError naming its dotted key (under `prefix`).

    The one translation of validation errors: run configs, part fields, study specs, task YAMLs and
    analysis fields all go through it, so every bad key reads the same way."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = ".".join(p for p in (prefix, loc) if p)
    kind, detail = err["type"], err["msg"]
    if kind == "extra_forbidden":
        detail = "unknown key"
    elif kind == "missing":
        detail = "missing required key"
    else:
        detail = detail.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if "input" in err and not isinstance(err["input"], dict):
            shown = repr(err["input"])
            shown = shown if len(shown) <= 120 else f"{shown[:120]}… ({len(shown) - 120:,} more characters)"
            detail = f"{detail} (got {shown})"
    return ConfigError(key, detail, context)
