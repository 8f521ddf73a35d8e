"""A train job loads only what it uses (issue #35): no plotting stack (torchmetrics pulls matplotlib), no sympy."""

import subprocess
import sys

# What a tiny job imports (deltanet/cli/train.py, deltanet/training/job.py), then a fused training step of two
# members (cross-entropy per member: deltanet/training/fused.py) and an evaluation pass's metrics.
STEP = """
import sys
import torch
import deltanet.cli.train, deltanet.training.job
from deltanet.metrics import TaskMetrics
from deltanet.model import ModelConfig, build_model
from deltanet.training.fused import FusedModel, member_losses

cfg = ModelConfig(vocab_size=16, dim=32, num_heads=2, head_dim=16, chunk_size=8)
models = [build_model(cfg) for _ in range(2)]
fused = FusedModel.stack(models)
x = torch.randint(0, 16, (2, 4, 16))
logits = fused.logits(x)
member_losses(logits, x).sum().backward()
metrics = TaskMetrics(vocab_size=16)
metrics.update(logits[0], x[0])
metrics.compute()
print(" ".join(sorted(m for m in ("matplotlib", "sympy", "torchmetrics") if m in sys.modules)))
"""


def test_a_training_step_loads_no_plotting_stack_or_sympy():
    out = subprocess.run([sys.executable, "-c", STEP], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
