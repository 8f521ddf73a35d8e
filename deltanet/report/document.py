"""The report's document model: sections made of a few block kinds, rendered to Markdown and HTML by ``render``."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Para:
    text: str  # `code` spans allowed


@dataclass
class Bullets:
    items: list[str]


# Marks appended to a delta: what the difference means (see ``deltanet.report.analysis.delta_marks``).
IDENTICAL = "≡"  # the two models are identical by construction at this setting
SIGNIFICANT = "*"  # the difference is beyond the noise
NOISE = "~"  # the difference is within the noise


def not_a_finding(mark: str) -> bool:
    """True when a delta's mark says it is noise: identical by construction, or within the noise."""
    return bool({IDENTICAL, NOISE} & set(mark.split()))


@dataclass
class Table:
    df: pd.DataFrame  # float cells are formatted with ``floatfmt``; NaN shows as "—"
    floatfmt: str = ".4f"
    colour: str | None = None  # "delta": colour numeric cells green (> 0) / red (< 0) in HTML, unless NOISE/IDENTICAL
    signed: bool = False  # print numbers with an explicit sign
    marks: pd.DataFrame | None = None  # same shape as df: text after a cell's value (or in place of "—"); "" = none


@dataclass
class Image:
    name: str  # file name under plots/
    alt: str


@dataclass
class Verbatim:
    """Text embedded as is: Markdown in report.md, a preformatted block in report.html."""

    text: str


Block = Para | Bullets | Table | Image | Verbatim


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")
