"""report.html in a real browser: at a laptop's 1,280 px nothing is wider than the window (no horizontal scrolling).

Debian's chromium, headless, lays out a report of every registered variant (the longest names) with the identity
marks of a real tiny run, a diverged cell and a kernel summary; a script added to a copy of the page writes each
table's (and <pre>'s) right edge, whether it scrolls inside, and the document's scroll width into the DOM, which
``--dump-dom`` prints: one chromium start. apt-get installs chromium when it is missing (root); the test is skipped,
with the reason, where that cannot be done.
"""

from __future__ import annotations

import html
import json
import re
import subprocess

import pandas as pd
import pytest
from debian_packages import ensure_installed
from test_aggregate import diverged_rows, make_run, write_runs_dir
from test_report import REF

from deltanet import report
from deltanet.tasks import DISPLAY_NAMES
from deltanet.variants.catalog import variant_names
from deltanet.verify_kernels import summary_markdown

WIDTH = 1280  # a laptop screen's width in CSS pixels
SOFTMAX = "delta_net_4layer_softmax_attention_in_for_loop"
# Runs in the page after parsing; it writes what the browser laid out into a <pre id="measured">.
MEASURE = """<script>
(() => {
  const root = document.documentElement;
  const section = el => {
    while (el && el.tagName !== "H2") el = el.previousElementSibling;
    return el ? el.textContent : "";
  };
  const boxes = [...document.querySelectorAll("table, pre")].map(el => ({
    tag: el.tagName.toLowerCase(), section: section(el), right: Math.ceil(el.getBoundingClientRect().right),
    scrolls: el.scrollWidth > el.clientWidth}));
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify({innerWidth, clientWidth: root.clientWidth, scrollWidth: root.scrollWidth, boxes});
  document.body.append(out);
})();
</script>"""


def tiny_identities() -> dict:
    """identities.json as ``deltanet variants --identities --scale tiny`` wrote it on 2026-12-05 (seq 8: compression,
    32: the other tasks): the marks a real tiny report shows, ``≡ softmax_attention`` in every column included."""
    settings = {t: {"baseline": 8 if t == "compression" else 32} for t in DISPLAY_NAMES}
    state_updates = ["adam", "layernorm", "momentum", "rmsprop", "sigmoid_error_forget_gate"]
    found = [(8, f"delta_net_4layer_{v}_state_update_in_for_loop", "delta_net_4layer") for v in state_updates]
    found += [(n, "delta_net_4layer_normalize_keys_in_for_loop", "delta_net_4layer") for n in (8, 32)]
    found += [(n, "delta_net_4layer_topk_softmax_attention_in_for_loop", SOFTMAX) for n in (8, 32)]
    return {"scale": "tiny", "tolerance": 1e-5, "settings": settings,
            "identities": [{"seq_len": n, "variant": v, "equal_to": e, "max_abs_diff": 0.0} for n, v, e in found]}


def kernel_summary() -> str:
    """``verify.md`` as ``deltanet verify-kernels`` writes it for the CPU grid (every op, dtype and tensor)."""
    tensors = {"delta": ["o", "final_state", "dq", "dk", "dv", "dbeta", "dh0"]}
    tensors["gated"] = [*tensors["delta"], "dg"]
    rows = [{"op": op, "B": 2, "T": 64, "H": 2, "D": 32, "chunk_size": 16, "dtype": dtype, "h0": True, "tensor": t,
             "max_abs_err": 1.5e-6, "rms_ratio_err": 1.2e-6, "tolerance": tol, "passed": True}
            for op, names in tensors.items() for dtype, tol in (("fp32", 1e-5), ("fp16", 5e-3)) for t in names]
    return summary_markdown(pd.DataFrame(rows), "cpu", quick=True, seconds=61.0)


@pytest.fixture(scope="module")
def laid_out(tmp_path_factory) -> dict:
    """The browser's measurements of a report over every registered variant × task, opened at ``WIDTH`` px."""
    reason = ensure_installed(("chromium",), ("chromium",))
    if reason:
        pytest.skip(f"no headless chromium here: {reason}")
    root = tmp_path_factory.mktemp("browser")
    ref = REF.set_index("variant")
    rows = [make_run(v, task, 0, 1e-3, 0.0, 1, ref.at[v, col] if v in ref.index else 0.5)
            for v in variant_names() for task, col in DISPLAY_NAMES.items()
            if (v, task) != (SOFTMAX, "memorization")]  # fmt: skip
    runs_dir = write_runs_dir(root, rows + diverged_rows(SOFTMAX, "memorization"))
    (root / "verify.md").write_text(kernel_summary())
    (root / "identities.json").write_text(json.dumps(tiny_identities()))
    argv = ["--runs-dir", str(runs_dir), "--out-dir", str(root), "--scale", "tiny", "--kernels-summary",
            str(root / "verify.md"), "--identities", str(root / "identities.json")]  # fmt: skip
    assert report.main(argv) == 0
    page = root / "page.html"
    page.write_text((root / "report.html").read_text().replace("</body>", MEASURE + "</body>"))
    # its own profile folder: a chromium already running with the default one would take the page over
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={root / 'profile'}",
           f"--window-size={WIDTH},800", "--dump-dom", page.as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="measured">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"chromium (rc {proc.returncode}) printed no measurements: {proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_the_window_is_a_laptop_screen(laid_out):
    assert laid_out["innerWidth"] == WIDTH


def test_nothing_needs_horizontal_scrolling(laid_out):
    view = laid_out["clientWidth"]
    past = [(b["tag"], b["section"], b["right"]) for b in laid_out["boxes"] if b["right"] > view]
    assert not past, f"ending past the {view}-px-wide page (element, section, right edge): {past}"
    scrolling = [(b["tag"], b["section"]) for b in laid_out["boxes"] if b["scrolls"]]
    assert not scrolling, f"scrolling sideways inside the page: {scrolling}"
    assert laid_out["scrollWidth"] <= view
