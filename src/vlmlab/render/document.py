"""A report as sections of text, tables and figures, rendered to self-contained HTML and to Markdown."""

from __future__ import annotations

import base64
import html
import io as _io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vlmlab import io
from vlmlab.errors import printable

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #333}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%}figcaption{color:#555;font-size:.9em}
code{background:#f3f3f3;padding:0 .2em}.pass{color:#1a7f37;font-weight:bold}.fail{color:#b42318;font-weight:bold}
nav ul{columns:2}
"""


@dataclass
class Text:
    text: str  # plain text; `code` spans and **bold** are rendered in both formats


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Figure:
    png: bytes
    caption: str
    name: str  # file stem for the Markdown copy


@dataclass
class Section:
    title: str
    blocks: list[Text | Table | Figure] = field(default_factory=list)
    anchor: str = ""

    def text(self, text: str) -> Section:
        self.blocks.append(Text(text))
        return self

    def table(self, frame: pd.DataFrame, caption: str = "") -> Section:
        self.blocks.append(Table(frame, caption))
        return self

    def figure(self, fig, caption: str, name: str) -> Section:
        """Add a matplotlib figure (closed after rendering to PNG)."""
        self.blocks.append(Figure(figure_png(fig), caption, name))
        return self


def figure_png(fig, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _inline_html(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _format(value) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.3f}"
    return str(value)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~#!])")  # characters Markdown (or the HTML inside it) would act on
_MD_ACTIVE = re.compile(r"([\\<>&\[\]|])")  # in running text: raw HTML, links and images, table pipes


def md_cell(value) -> str:
    """A value as literal Markdown table-cell text: every character Markdown or HTML would act on is
    backslash-escaped and a line break becomes a space (user text such as a question never renders as HTML,
    a link or an image)."""
    text = printable(_format(value).replace("\r\n", " ").replace("\n", " ").replace("\r", " "))
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_text(text: str) -> str:
    """Running text for Markdown: the report's own `code` spans and **bold** stay, while raw HTML, links, images
    and control characters in it (from user text) are escaped. Code spans are literal in Markdown already."""
    shown = "".join(ch if ch in "\n\t" or ch.isprintable() else repr(ch)[1:-1] for ch in text)
    parts = re.split(r"(`[^`\n]*`)", shown)
    return "".join(
        part if part.startswith("`") and part.endswith("`") and len(part) > 1 else _MD_ACTIVE.sub(r"\\\1", part)
        for part in parts
    )


def _markdown_table(frame: pd.DataFrame) -> str:
    cols = [md_cell(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(md_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_format(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Report:
    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self.sections: list[Section] = []

    def add(self, section: Section) -> Section:
        section.anchor = section.anchor or _slug(section.title)
        self.sections.append(section)
        return section

    def to_html(self) -> str:
        parts = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
            f"<style>{CSS}</style></head><body><h1>{html.escape(self.title)}</h1>",
        ]
        if self.subtitle:
            parts.append(f"<p>{_inline_html(self.subtitle)}</p>")
        parts.append(
            "<nav><ul>"
            + "".join(f"<li><a href='#{s.anchor}'>{html.escape(s.title)}</a></li>" for s in self.sections)
            + "</ul></nav>"
        )
        for s in self.sections:
            parts.append(f"<section id='{s.anchor}'><h2>{html.escape(s.title)}</h2>")
            for b in s.blocks:
                if isinstance(b, Text):
                    parts.append(f"<p>{_inline_html(b.text)}</p>")
                elif isinstance(b, Table):
                    parts.append(
                        _html_table(b.frame) + (f"<p><em>{_inline_html(b.caption)}</em></p>" if b.caption else "")
                    )
                else:
                    data = base64.b64encode(b.png).decode()
                    parts.append(
                        f"<figure><img alt='{html.escape(b.caption)}' src='data:image/png;base64,{data}'>"
                        f"<figcaption>{_inline_html(b.caption)}</figcaption></figure>"
                    )
            parts.append("</section>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def to_markdown(self, figure_dir: Path, relative_to: Path) -> str:
        """Markdown with figures written as PNG files into `figure_dir` (atomically)."""
        lines = [f"# {md_text(self.title)}", ""]
        if self.subtitle:
            lines += [md_text(self.subtitle), ""]
        for s in self.sections:
            lines += [f"## {md_text(s.title)}", ""]
            for b in s.blocks:
                if isinstance(b, Text):
                    lines += [md_text(b.text), ""]
                elif isinstance(b, Table):
                    lines += [_markdown_table(b.frame), ""] + ([f"*{md_text(b.caption)}*", ""] if b.caption else [])
                else:
                    path = figure_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '-', b.name)}.png"
                    with io.atomic_path(path) as tmp:
                        tmp.write_bytes(b.png)
                    caption = md_text(b.caption)
                    lines += [f"![{caption}]({path.relative_to(relative_to).as_posix()})", "", f"*{caption}*", ""]
        return "\n".join(lines)

    def write(self, html_path: Path, md_path: Path) -> None:
        md = self.to_markdown(md_path.parent / "figures", md_path.parent)
        io.write_text(md_path, md)
        io.write_text(html_path, self.to_html())
