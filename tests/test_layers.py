"""The layers hold: import-linter's contracts (pyproject.toml) pass, and the DAG build imports no torch."""

import subprocess
import sys
from pathlib import Path

from tests.workflow.helpers import copy_workflow, env

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """A future leak (torch in the table code, an upward import, a cycle) fails here, naming the broken contract."""
    run = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=REPO, capture_output=True, text=True)
    broken = run.stdout[run.stdout.find("Broken contracts"):] if "Broken contracts" in run.stdout else run.stdout
    assert run.returncode == 0, broken + run.stderr
    assert "0 broken" in run.stdout


def test_the_full_grid_dag_build_imports_no_torch(tmp_path):
    """`snakemake -n --config scale=full` in-process; what it imported is read at exit."""
    work = copy_workflow(tmp_path / "wf")
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: open('imported.txt', 'w').write(' '.join(sorted(sys.modules))))\n"
             "from snakemake.cli import main\n"
             "sys.argv = ['snakemake', '--dry-run', '--quiet', 'rules', '--config', 'scale=full']\n"
             "main()\n")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", probe], cwd=work, env=env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    imported = set((work / "imported.txt").read_text().split())
    assert "deltanet.variants.catalog" in imported and "deltanet.import_graph" in imported
    assert {"torch", "torchmetrics", "triton"}.isdisjoint(imported)
