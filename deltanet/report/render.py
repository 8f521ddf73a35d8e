"""Render report sections to Markdown (plots referenced under plots/) and self-contained HTML (plots inlined)."""

from __future__ import annotations

import base64
import html
import math
import numbers
import re

from pandas.api.types import is_numeric_dtype
from tabulate import tabulate

from deltanet.report.document import MODEL_COLUMNS, Bullets, Image, Para, Section, Table, model_label, not_a_finding

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1300px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0} td:first-child,th:first-child{text-align:left}
th.txt,td.txt{text-align:left} td.missing{color:#999;text-align:center} td.note{color:#a33;text-align:center}
code{background:#f4f4f4;padding:0 3px}
img{max-width:100%;border:1px solid #eee;margin:.5em 0} nav li{display:inline;margin-right:1em}
"""


def _is_missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(v: object, t: Table) -> str:
    if _is_missing(v):
        return "—"
    if isinstance(v, float):
        if float(format(v, t.floatfmt)) == 0:
            v = 0.0  # no "-0.0000"
        return format(v, ("+" if t.signed else "") + t.floatfmt)
    return str(v)


def _marks(t: Table) -> list[list[str]]:
    if t.marks is None:
        return [[""] * len(t.df.columns) for _ in range(len(t.df))]
    marks = t.marks.reindex(index=t.df.index, columns=t.df.columns).fillna("")
    return [list(row) for row in marks.itertuples(index=False)]


def _cells(t: Table) -> list[list[str]]:
    """Each cell's text: the formatted value (a model's label in ``MODEL_COLUMNS``), its mark after it (or the mark
    alone in place of a missing value)."""
    named = [c in MODEL_COLUMNS for c in t.df.columns]
    rows = []
    for row, marks in zip(t.df.itertuples(index=False), _marks(t)):
        values = [model_label(v) if n and isinstance(v, str) else v for v, n in zip(row, named)]
        rows.append([m if (m and _is_missing(v)) else f"{_fmt(v, t)} {m}".rstrip() for v, m in zip(values, marks)])
    return rows


# ---------------------------------------------------------------------------------------------- Markdown
def _md_table(t: Table) -> str:
    return tabulate(_cells(t), headers=[str(c) for c in t.df.columns], tablefmt="github", disable_numparse=True)


def to_markdown(title: str, sections: list[Section]) -> str:
    parts = [f"# {title}", ""]
    for sec in sections:
        parts += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, Para):
                parts.append(b.text)
            elif isinstance(b, Bullets):
                parts.append("\n".join(f"- {i}" for i in b.items))
            elif isinstance(b, Table):
                parts.append(_md_table(b))
            elif isinstance(b, Image):
                parts.append(f"![{b.alt}](plots/{b.name})")
            parts.append("")
    return "\n".join(parts).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- HTML
def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = _CODE.sub(r"<code>\1</code>", out)
    return _BOLD.sub(r"<b>\1</b>", out)


def delta_style(v: float, scale: float = 0.2) -> str:
    """Background colour of a delta cell: green above 0, red below, stronger with magnitude (full at ``scale``)."""
    if _is_missing(v) or abs(v) < 5e-4:
        return ""
    alpha = 0.15 + 0.6 * min(abs(v) / scale, 1.0)
    rgb = "0,150,0" if v > 0 else "210,0,0"
    return f' style="background:rgba({rgb},{alpha:.2f})"'


def _html_table(t: Table) -> str:
    """A table whose model names (``MODEL_COLUMNS``) show their label with the full name as hover text.

    Other cells may wrap after an underscore: a mark naming a model (``≡ softmax_attention``) in every column
    then wraps instead of widening the table past the page or the labels.
    """
    head = "".join(f"<th>{html.escape(str(c))}</th>" if is_numeric_dtype(t.df[c]) else
                   f'<th class="txt">{html.escape(str(c))}</th>' for c in t.df.columns)  # fmt: skip
    named = [c in MODEL_COLUMNS for c in t.df.columns]
    rows = []
    for raw, text, marks in zip(t.df.itertuples(index=False), _cells(t), _marks(t)):
        tds = []
        for v, s, m, n in zip(raw, text, marks, named):
            numeric = isinstance(v, numbers.Number) and not isinstance(v, bool)
            if _is_missing(v):
                cls = ' class="note"' if m else ' class="missing"'
            else:
                cls = "" if numeric else ' class="txt"'
            style = delta_style(v) if (t.colour == "delta" and numeric and not not_a_finding(m)) else ""
            title = f' title="{html.escape(v)}"' if n and isinstance(v, str) and model_label(v) != v else ""
            tds.append(f"<td{cls}{style}{title}>{_inline(s) if n else _inline(s).replace('_', '_<wbr>')}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def to_html(title: str, sections: list[Section], images: dict[str, bytes]) -> str:
    """Self-contained HTML: CSS inline, every plot a base64 PNG data URI, no external asset."""
    nav = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
    body = [f"<h1>{html.escape(title)}</h1>", f"<nav><ul>{nav}</ul></nav>"]
    for sec in sections:
        body.append(f'<h2 id="{sec.anchor}">{html.escape(sec.title)}</h2>')
        for b in sec.blocks:
            if isinstance(b, Para):
                body.append(f"<p>{_inline(b.text)}</p>")
            elif isinstance(b, Bullets):
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
            elif isinstance(b, Table):
                body.append(_html_table(b))
            elif isinstance(b, Image):
                data = base64.b64encode(images[b.name]).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(b.alt)}</figcaption></figure>")  # fmt: skip
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


