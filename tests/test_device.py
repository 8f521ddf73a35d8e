"""``training_device``: the one place ``--device auto|cpu|cuda`` becomes a torch device (train, smoke, benchmarks)."""

import pytest
import torch

from deltanet.training.device import DEVICE_CHOICES, training_device


@pytest.fixture
def matmul_precision():
    """Restores the process-wide matmul precision the function under test sets."""
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


def test_a_bad_name_is_one_error_naming_it_and_the_choices():
    with pytest.raises(ValueError) as err:
        training_device("gpu")
    assert str(err.value).startswith("unknown device 'gpu'")
    assert str(err.value).endswith(f"(allowed: {', '.join(DEVICE_CHOICES)})")


def test_auto_is_cuda_when_torch_sees_it_else_the_cpu(matmul_precision):
    assert training_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert training_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name, scale_gpus, wanted", [("cuda", 0, "device 'cuda'"),
                                                      ("auto", 1, "this scale asks for 1 GPU(s) (resources.gpu)")])
def test_no_cuda_is_refused_for_cuda_and_for_a_gpu_scale_under_auto(name, scale_gpus, wanted, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi
    with pytest.raises(ValueError) as err:
        training_device(name, scale_gpus)
    assert str(err.value) == (
        f"{wanted}, but torch sees no CUDA device (CUDA_VISIBLE_DEVICES=''; torch built without CUDA; no nvidia-smi "
        "here): run it where a GPU is visible (under Apptainer with --nv: snakemake --singularity-args=--nv), or name "
        "--device cpu to train on the CPU anyway")
    assert training_device("cpu", scale_gpus) == torch.device("cpu")  # naming the CPU stays the user's choice


def test_it_sets_the_matmul_precision_every_training_process_uses(matmul_precision):
    torch.set_float32_matmul_precision("highest")
    training_device("cpu")
    assert torch.get_float32_matmul_precision() == "high"
