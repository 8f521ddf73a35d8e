"""The variants as the files say, without importing them (no torch): names, mixer kinds, the unknown-name check.

The DAG build and the config checks need only this; :func:`deltanet.variants.get_variant` imports a variant's code.
A file that is not valid Python fails here with the same one line as at import (file, line, ``SyntaxError``); an
error that only importing shows (a bad import) is reported by ``get_variant``, i.e. by the job that runs it.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

from deltanet.names import unknown_name

MIXER_KINDS = ("delta", "gated")
BASELINE_VARIANTS = {"delta": "delta_net_4layer", "gated": "gated_delta_net_4layer"}  # mixer kind -> its baseline
PACKAGE_DIR = Path(__file__).parent
NOT_VARIANTS = frozenset({"catalog"})  # modules of this folder that are not variants (besides ``_``-prefixed)


def variant_names() -> list[str]:
    """Names of every variant module in this folder, sorted (``_``-prefixed files and ``NOT_VARIANTS`` excluded)."""
    modules = pkgutil.iter_modules([str(PACKAGE_DIR)])
    return sorted(m.name for m in modules if not m.name.startswith("_") and m.name not in NOT_VARIANTS)


def check_known(name: str) -> None:
    """Raise ValueError (:func:`deltanet.names.unknown_name`: the closest match) unless ``name`` is registered."""
    names = variant_names()
    if name not in names:
        raise ValueError(unknown_name("variant", name, names, listed_by="deltanet variants"))


def variant_mixer(name: str) -> str:
    """The ``MIXER = "..."`` constant of a registered variant's file, read with ``ast``; ValueError names the file."""
    check_known(name)
    path = PACKAGE_DIR / f"{name}.py"
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as err:
        raise ValueError(f"variant module {path}, line {err.lineno}: SyntaxError: {err.msg}") from None
    mixer = next((node.value.value for node in tree.body if isinstance(node, ast.Assign)
                  and [getattr(t, "id", None) for t in node.targets] == ["MIXER"]
                  and isinstance(node.value, ast.Constant)), None)  # fmt: skip
    if mixer not in MIXER_KINDS:
        raise ValueError(f"variant module {path}: MIXER must be one of {MIXER_KINDS}, got {mixer!r}")
    return mixer
