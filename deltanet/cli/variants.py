"""``deltanet variants`` (list the registered variants, or ``--identities``: which models equal another by
construction at a scale) and ``deltanet new-variant NAME`` (write one from a template)."""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import keyword
import re
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

from tabulate import tabulate

from deltanet.io import write_text_atomic
from deltanet.names import unknown_name
from deltanet.variants import MIXER_KINDS, NOT_VARIANTS, PACKAGE_DIR, get_variant, variant_names
from deltanet.variants.catalog import BASELINE_VARIANTS

DEFAULT_VOCAB = 16  # MAD vocabulary size used for the parameter counts
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

TEMPLATE = '''"""{summary}

Change vs the baseline loop: TODO (this file starts as an exact copy of the loop of {baseline}).

{math}

Interpretation: TODO. Where the name leaves room (top-k, momentum, a gate, a temperature...), say what you chose
and why, and name every constant as a module-level constant below. Set CHUNK_DEPENDENT = True if the outputs
depend on the chunk size (intra-chunk softmax, one state step per chunk...): the tests check the declaration.
"""

{imports}

MIXER = "{mixer}"
CHUNK_DEPENDENT = False
USES_KERNEL = False  # True only if the loop is exactly the baseline's (the fused kernel would run instead)

# Optional hooks (see deltanet/variants/__init__.py):
#   def init_carry(state): return {{"S": state, "M": torch.zeros_like(state)}}       extra loop state
#   def make_params(num_heads, head_k_dim, head_v_dim): return LoopParams(...)      learnable, counted by the model
# then use carry["M"] / params.<name> in loop_body. Shared helpers: deltanet/variants/_common.py.


def loop_body({params}):
{body}
'''
HELPERS = "deltanet.variants._common"  # where variants import the loop's steps from


def render_template(name: str, mixer: str = "delta", summary: str | None = None) -> str:
    """Source of a new variant module: the ``mixer`` baseline's loop body, its own statements read from its source
    (with the imports they need) and its module docstring's math, written out so they can be edited."""
    if mixer not in MIXER_KINDS:
        raise ValueError(unknown_name("mixer", mixer, MIXER_KINDS))
    baseline = BASELINE_VARIANTS[mixer]
    loop_body = get_variant(baseline).loop_body
    source = textwrap.dedent(inspect.getsource(loop_body))
    function, lines = ast.parse(source).body[0], source.splitlines()
    statements = function.body[1:] if ast.get_docstring(function) else function.body
    params = [arg.arg for arg in function.args.args]
    math = inspect.getdoc(importlib.import_module(f"deltanet.variants.{baseline}")).partition("\n\n")[2]
    return TEMPLATE.format(
        summary=summary or f"TODO: one-line summary of {name} (shown by `deltanet variants`).", baseline=baseline,
        math=math, imports=_imports(statements, params, loop_body.__globals__), mixer=mixer, params=", ".join(params),
        body="\n".join(lines[statements[0].lineno - 1 : statements[-1].end_lineno]),
    )  # fmt: skip


def _imports(statements: list[ast.stmt], params: list[str], namespace: dict) -> str:
    """The import lines for the module-level names of ``namespace`` that ``statements`` read: a step the variants'
    helpers re-export from there, anything else from where it is defined."""
    read, assigned = set(), set(params)
    for node in (node for statement in statements for node in ast.walk(statement) if isinstance(node, ast.Name)):
        (read if isinstance(node.ctx, ast.Load) else assigned).add(node.id)
    helpers = importlib.import_module(HELPERS)
    modules, from_imports = [], {}
    for name in sorted((read - assigned) & namespace.keys()):
        value = namespace[name]
        if isinstance(value, ModuleType):
            modules.append(f"import {value.__name__}" + ("" if value.__name__ == name else f" as {name}"))
        else:
            defined_in = getattr(value, "__module__", namespace["__name__"])  # a constant: from the loop's module
            from_imports.setdefault(HELPERS if getattr(helpers, name, None) is value else defined_in, []).append(name)
    return "\n".join(modules + [f"from {home} import {', '.join(imported)}"
                                 for home, imported in sorted(from_imports.items())])  # fmt: skip


def check_new_name(name: str, folder: Path = PACKAGE_DIR) -> None:
    """Raise ValueError unless ``name`` is a fresh, importable variant module name."""
    if not NAME_RE.match(name) or keyword.iskeyword(name):
        raise ValueError(f"variant name {name!r} must be lower-case letters, digits and '_', starting with a letter")
    if name in NOT_VARIANTS or (folder / f"{name}.py").exists():
        raise ValueError(f"variant {name!r} already exists: {folder / f'{name}.py'}")


def write_variant(name: str, mixer: str = "delta", summary: str | None = None, folder: Path = PACKAGE_DIR) -> Path:
    """Write ``folder/NAME.py`` from the template; returns its path."""
    check_new_name(name, folder)
    path = folder / f"{name}.py"
    path.write_text(render_template(name, mixer, summary), encoding="utf-8")
    importlib.invalidate_caches()  # so this process can import it at once
    return path


def new_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deltanet new-variant",
        description="Write deltanet/variants/NAME.py from the baseline loop; the registry and the tests pick it up.",
    )
    parser.add_argument("name", help="module name, e.g. delta_net_4layer_my_idea_in_for_loop")
    parser.add_argument("--mixer", choices=MIXER_KINDS, default="delta", help="which baseline loop to start from")
    parser.add_argument("--summary", help="one-line summary (the docstring's first line)")
    args = parser.parse_args(argv)
    try:
        path = write_variant(args.name, args.mixer, args.summary)
    except ValueError as err:
        print(f"deltanet new-variant: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    print("next: edit loop_body and the docstring, then run: python -m pytest tests/test_variants.py -k " + args.name)
    return 0


def variant_rows(vocab_size: int = DEFAULT_VOCAB) -> list[tuple[str, str, int, str]]:
    """(name, mixer, parameter count of the MAD LanguageModel at default width, summary) per variant."""
    from deltanet.model import LanguageModel, ModelConfig, count_parameters  # the model imports the registry

    rows = []
    for name in variant_names():
        variant = get_variant(name)
        params = count_parameters(LanguageModel(ModelConfig(vocab_size=vocab_size, variant=name)))
        rows.append((name, variant.mixer, params, variant.summary))
    return rows


def identities_main(config_path: str, scale: str | None, out: str | None) -> int:
    """``deltanet variants --identities``: print the identities at ``scale`` (and write them as JSON to ``out``)."""
    import torch

    from deltanet.config import ConfigError, load_config
    from deltanet.identities import TOLERANCE, find_identities  # imports the model, which imports the registry
    from deltanet.selection import resolve_scale

    try:
        config = load_config(config_path)
    except ConfigError as err:
        print(f"deltanet variants: error: {err}", file=sys.stderr)
        return 2
    scale = scale or resolve_scale(config)
    if scale not in config["scales"]:
        print(f"deltanet variants: error: {unknown_name('scale', scale, list(config['scales']))}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # seconds of work; 2 threads on 2 busy cores took 22 s instead of 0.2 s (tiny scale)
    start = time.perf_counter()
    result = {"scale": scale, **find_identities(config["scales"][scale])}
    seconds = time.perf_counter() - start
    seq_lens = sorted({n for per_task in result["settings"].values() for n in per_task.values()})
    print(f"identities at scale {scale!r} (seq lens {', '.join(map(str, seq_lens))}; logits within {TOLERANCE:g}; "
          f"{seconds:.1f} s):")  # fmt: skip
    rows = [(i["seq_len"], i["variant"], i["equal_to"], i["max_abs_diff"]) for i in result["identities"]]
    print(tabulate(rows, headers=("seq_len", "variant", "equal to", "max abs diff"), tablefmt="simple", floatfmt=".1e"))
    for name, error in result["errors"].items():
        print(f"not checked (it fails to run; its train jobs will say so too): {name}: {error}", file=sys.stderr)
    if out:
        write_text_atomic(Path(out), json.dumps(result, indent=1) + "\n")
        print(f"-> {out}")
    return 0


def list_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deltanet variants",
        description="List the registered variants: name, mixer kind, parameters of the MAD language model at "
        f"default width (vocab {DEFAULT_VOCAB}), one-line summary.",
    )
    parser.add_argument("--identities", action="store_true",
                        help="instead: the models identical to another by construction at each sequence length of "
                             "the scale's task settings (random tokens, shared random weights)")  # fmt: skip
    parser.add_argument("--scale", help="with --identities: the scale (default: the config's, auto resolved)")
    parser.add_argument("--config", default="config.yaml", help="with --identities: the config file (config.yaml)")
    parser.add_argument("--out", help="with --identities: also write the result as JSON to this file")
    args = parser.parse_args(argv)
    if args.identities:
        return identities_main(args.config, args.scale, args.out)
    if args.scale or args.out or args.config != parser.get_default("config"):
        parser.error("--scale, --config and --out go with --identities")
    try:
        rows = variant_rows()
    except ValueError as err:  # a broken variant module: say which
        print(f"deltanet variants: {err}", file=sys.stderr)
        return 1
    print(tabulate(rows, headers=("variant", "mixer", "params", "summary"), tablefmt="simple", intfmt=","))
    return 0
