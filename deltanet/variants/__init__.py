"""Variant registry: every module in this folder is one variant, discovered by file name (no central list).

A variant module holds the math of one per-chunk loop (see :mod:`deltanet.ops.chunkwise`) and declares:

- ``MIXER``: ``"delta"`` or ``"gated"`` — which chunkwise op (and mixer layer) it runs in;
- ``loop_body(chunk, carry, params) -> (O_chunk, carry)``;
- ``CHUNK_DEPENDENT``: True when its outputs depend on the chunk size (intra-chunk softmax, chunk-level top-k…);
- ``USES_KERNEL``: True when its loop is exactly the baseline's, so the fused Triton kernel may run it;
- optionally ``init_carry(S0) -> carry`` (extra loop state such as a momentum) and
  ``make_params(num_heads, head_k_dim, head_v_dim) -> nn.Module`` (learnable parameters, owned by the mixer).

The module docstring's first line is the variant's one-line summary. Not variants: ``_``-prefixed files (shared
helpers in ``_common.py``) and ``catalog.py`` (names and mixers read from the files, without torch). Importing this
package imports no torch: a variant's module (and the ops it uses) is imported by :func:`get_variant`.
"""

from __future__ import annotations

import importlib
import traceback
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Callable

from deltanet.variants.catalog import MIXER_KINDS, NOT_VARIANTS, PACKAGE_DIR, check_known, variant_names

if TYPE_CHECKING:
    from torch import nn

    from deltanet.ops.chunkwise import InitCarry, LoopBody

__all__ = ["MIXER_KINDS", "NOT_VARIANTS", "PACKAGE_DIR", "Variant", "all_variants", "get_variant", "variant_names"]


@dataclass(frozen=True)
class Variant:
    name: str
    mixer: str
    loop_body: LoopBody
    init_carry: InitCarry
    make_params: Callable[[int, int, int], nn.Module] | None
    chunk_dependent: bool
    uses_kernel: bool
    summary: str
    source: Path


def _from_module(name: str, module: ModuleType) -> Variant:
    from deltanet.ops.chunkwise import default_init_carry

    where = f"variant module {module.__file__}"
    mixer = getattr(module, "MIXER", None)
    if mixer not in MIXER_KINDS:
        raise ValueError(f"{where}: MIXER must be one of {MIXER_KINDS}, got {mixer!r}")
    for attr in ("loop_body",):
        if not callable(getattr(module, attr, None)):
            raise ValueError(f"{where}: must define a function {attr}(chunk, carry, params)")
    for attr in ("CHUNK_DEPENDENT", "USES_KERNEL"):
        if not isinstance(getattr(module, attr, None), bool):
            raise ValueError(f"{where}: must set {attr} = True or False")
    doc = (module.__doc__ or "").strip()
    if not doc:
        raise ValueError(f"{where}: needs a module docstring (first line = one-line summary)")
    return Variant(
        name=name,
        mixer=mixer,
        loop_body=module.loop_body,
        init_carry=getattr(module, "init_carry", default_init_carry),
        make_params=getattr(module, "make_params", None),
        chunk_dependent=module.CHUNK_DEPENDENT,
        uses_kernel=module.USES_KERNEL,
        summary=doc.splitlines()[0],
        source=Path(module.__file__),
    )


@cache
def get_variant(name: str) -> Variant:
    """The registered variant ``name``; unknown names raise ValueError with the closest match and the list."""
    check_known(name)
    return _from_module(name, _import_variant(name))


def _import_variant(name: str) -> ModuleType:
    """Import a variant module; any error while importing it becomes one ValueError line naming file and line."""
    path = PACKAGE_DIR / f"{name}.py"
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except Exception as err:  # a syntax error, a bad import, a failing module-level statement: all name the file
        if isinstance(err, SyntaxError) and err.filename == str(path):
            line, message = err.lineno, err.msg
        else:
            frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == str(path)]
            line, message = (frames[-1].lineno if frames else "?"), str(err)
        raise ValueError(f"variant module {path}, line {line}: {type(err).__name__}: {message}") from err


def all_variants() -> list[Variant]:
    return [get_variant(n) for n in variant_names()]
