"""The report's document model: sections made of a few block kinds, rendered to Markdown and HTML by ``render``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Para:
    text: str  # `code` spans allowed


@dataclass
class Bullets:
    items: list[str]


# Every variant is named delta_net_4layer_<idea>_in_for_loop (the reference table's names): tables and plots show
# the <idea> (``model_label``), which keeps a table of the 50-to-70-character names within a laptop's screen.
MODEL_PREFIX = "delta_net_4layer_"
MODEL_SUFFIX = "_in_for_loop"
MODEL_COLUMNS = ("variant", "best variant", "runner-up")  # table columns that hold model names
LABEL_NOTE = (f"Variants are labelled without the prefix `{MODEL_PREFIX}` and the suffix `{MODEL_SUFFIX}` that "
              f"all their names share: `softmax_attention` is `{MODEL_PREFIX}softmax_attention{MODEL_SUFFIX}`; the "
              "baselines keep their names. In report.html a label's hover text is the full name; `accuracies.csv` "
              "and the run files keep the full names.")  # fmt: skip


def model_label(name: str) -> str:
    """A model's label in tables and plots: its name less ``MODEL_PREFIX`` and ``MODEL_SUFFIX`` (where present)."""
    return name.removeprefix(MODEL_PREFIX).removesuffix(MODEL_SUFFIX)


# Marks appended to a delta: what the difference means (see ``deltanet.report.analysis.delta_marks``).
IDENTICAL = "≡"  # the two models are identical by construction at this setting
SIGNIFICANT = "*"  # the difference is beyond the noise
NOISE = "~"  # the difference is within the noise


def not_a_finding(mark: str) -> bool:
    """True when a delta's mark says it is noise: identical by construction, or within the noise."""
    return bool({IDENTICAL, NOISE} & set(mark.split()))


@dataclass
class Table:
    df: pd.DataFrame  # float cells are formatted with ``floatfmt``; NaN shows as "—"; MODEL_COLUMNS as model_label
    floatfmt: str = ".4f"
    colour: str | None = None  # "delta": colour numeric cells green (> 0) / red (< 0) in HTML, unless NOISE/IDENTICAL
    signed: bool = False  # print numbers with an explicit sign
    marks: pd.DataFrame | None = None  # same shape as df: text after a cell's value (or in place of "—"); "" = none


@dataclass
class Image:
    name: str  # file name under plots/
    alt: str


Block = Para | Bullets | Table | Image


def from_markdown(text: str) -> list[Block]:
    """Blocks of a Markdown text as ``deltanet verify-kernels`` writes it: pipe tables (their cells as text),
    ``- `` bullet lists and paragraphs; ``#`` headings are left out (the section has its title).

    A table that the report lays out fits the page, where the same table as preformatted text would not.
    """
    blocks: list[Block] = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        lines = [ln.strip() for ln in chunk.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if not lines:
            continue
        if all(ln.startswith("|") for ln in lines):
            rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
            body = [r for r in rows[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]  # the |:---| line
            blocks.append(Table(pd.DataFrame(body, columns=rows[0])))
        elif all(ln.startswith("- ") for ln in lines):
            blocks.append(Bullets([ln[2:] for ln in lines]))
        else:
            blocks.append(Para(" ".join(lines)))
    return blocks


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")
