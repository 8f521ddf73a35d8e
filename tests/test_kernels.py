"""Triton kernels vs the naive chunk loop: forward, final state and every gradient; dispatch; USES_KERNEL claims;
``verify-kernels`` (including a deliberately wrong kernel). Without a GPU everything runs in the Triton interpreter
on small shapes (fp32, fp16; bf16 is broken in the interpreter); tests that need CUDA are marked ``cuda``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CUDA = torch.cuda.is_available()
IN_PROCESS = True
if not CUDA:
    # Triton decides interpreter-or-compiler when a function is decorated, its own library included (at
    # ``import triton``): set the switch now. If another test module already imported triton for the compiler,
    # the kernel tests cannot run in this process; test_kernel_suite_in_subprocess then reruns this file in a
    # fresh interpreter-mode process and the in-process copies are skipped (never silently passed).
    from deltanet.ops.kernels.launch import enable_interpreter

    try:
        enable_interpreter()
    except RuntimeError:
        IN_PROCESS = False

import pandas as pd  # noqa: E402

from deltanet.model import LanguageModel, ModelConfig  # noqa: E402
from deltanet.ops import chunk_delta_rule, chunk_gated_delta_rule  # noqa: E402
from deltanet.ops import delta_rule_chunkwise, gated_delta_rule_chunkwise  # noqa: E402
from deltanet.ops import dispatch  # noqa: E402
from deltanet.ops.testing import assert_close, forward_backward, rms_ratio, tolerance  # noqa: E402
from deltanet.ops.testing import make_inputs as _make_inputs  # noqa: E402
from deltanet.variants import all_variants  # noqa: E402
from deltanet.cli.verify_kernels import main as verify_main  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs an NVIDIA GPU (CUDA not available)")


@pytest.fixture(autouse=True)
def _in_process_or_skip(request):
    if not IN_PROCESS and request.node.originalname != "test_kernel_suite_in_subprocess":
        pytest.skip("triton was imported before TRITON_INTERPRET=1; test_kernel_suite_in_subprocess reruns this")


def make_inputs(B, T, H, Dk, Dv, gated, dtype, h0):
    return _make_inputs(B, T, H, Dk, Dv, gated=gated, dtype=dtype, h0=h0, device=DEVICE)


def compare(ref, out, dtype, gated):
    errors = {n: rms_ratio(ref[n], out[n]) for n in ref}
    print("RMS-ratio errors:", {n: f"{e:.1e}" for n, e in errors.items()})
    for name in ref:
        assert out[name].dtype == ref[name].dtype, f"{name}: dtype {out[name].dtype} != {ref[name].dtype}"
        assert_close(name, ref[name], out[name], tolerance(dtype, name, gated))


def kernel_matches_naive(gated, inputs, dtype, **kwargs):
    naive, kernel = (gated_delta_rule_chunkwise, chunk_gated_delta_rule) if gated else (
        delta_rule_chunkwise, chunk_delta_rule)  # fmt: skip
    compare(forward_backward(naive, inputs, **kwargs), forward_backward(kernel, inputs, **kwargs), dtype, gated)


# (B, T, H, Dk, Dv, chunk_size, initial state): T is never a multiple of the chunk size except in the last case
SHAPES = [
    (2, 45, 2, 16, 16, 16, True),
    (1, 70, 1, 32, 24, 32, False),
    (1, 100, 1, 16, 32, 64, True),
    (1, 64, 2, 16, 16, 32, True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-H{}-K{}-V{}-C{}-{}".format(*s[:6], "h0" if s[6] else "noh0"))
@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_kernel_matches_naive(gated, shape, dtype):
    B, T, H, Dk, Dv, C, h0 = shape
    inputs = make_inputs(B, T, H, Dk, Dv, gated, dtype, h0)
    kernel_matches_naive(gated, inputs, dtype, chunk_size=C)


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_kernel_output_only_loss_and_custom_scale(gated):
    """Backward without a final-state gradient (dS_T = None) and with an explicit scale."""
    inputs = make_inputs(1, 40, 2, 16, 16, gated, torch.float32, h0=True)
    kernel_matches_naive(gated, inputs, torch.float32, use_state=False, chunk_size=16, scale=0.3)


# (T, Dk, Dv): several value blocks with a masked tail; four key tiles, the last mostly masked; the reference Gated
# DeltaNet head (keys 256 = four tiles, values 512 = two launches of 256)
GPU_CONFIG_SHAPES = [(70, 64, 100), (45, 200, 72), (40, 256, 512)]


@pytest.mark.parametrize("shape", GPU_CONFIG_SHAPES, ids=lambda s: "T{}-K{}-V{}".format(*s))
@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_kernel_gpu_launch_config_in_interpreter(gated, shape, monkeypatch):
    """The GPU block sizes (key tiles, several value blocks per head, masked tails) run through the interpreter."""
    import deltanet.ops.kernels.launch as launch

    real = launch.launch_config
    monkeypatch.setattr(launch, "launch_config", lambda DK, DV, C, dtype, interpreted: real(DK, DV, C, dtype, False))
    T, Dk, Dv = shape
    cfg = real(Dk, min(Dv, 256), 32, torch.float32, False)
    assert cfg["NV_m"] > 1 and (cfg["NK"], cfg["BK"]) == ((Dk + 63) // 64, 64)
    inputs = make_inputs(1, T, 1, Dk, Dv, gated, torch.float32, h0=True)
    kernel_matches_naive(gated, inputs, torch.float32, chunk_size=32)


def test_kernel_rejects_bad_arguments():
    inputs = make_inputs(1, 20, 1, 16, 16, False, torch.float32, h0=False)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_delta_rule(**inputs, chunk_size=8)
    with pytest.raises(ValueError, match="beta"):
        chunk_delta_rule(inputs["q"], inputs["k"], inputs["v"], inputs["beta"][:, :-1])
    if not CUDA:
        bf = {n: x.bfloat16() for n, x in inputs.items()}
        with pytest.raises(RuntimeError, match="bf16"):
            chunk_delta_rule(**bf)


def test_kernel_faults_are_passed_in_not_read_from_the_environment(monkeypatch):
    from deltanet.ops.kernels.function import chunk_rule

    monkeypatch.setenv("DELTANET_KERNEL_FAULT", "drop_state_update")  # the old hook: ignored now
    inputs = make_inputs(1, 40, 1, 16, 16, False, torch.float32, h0=False)
    kernel_matches_naive(False, inputs, torch.float32, chunk_size=16)
    with pytest.raises(ValueError, match=r"^fault must be None or one of \('drop_state_update',\), got 'bogus'$"):
        chunk_rule(**inputs, chunk_size=16, fault="bogus")


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_value_heads_wider_than_one_launch_run_in_blocks(gated, monkeypatch):
    """fla's Gated DeltaNet has 512-wide value heads; the kernels take 256 per launch and run wider ones in blocks
    (here: blocks of 16 for Dv = 40, so three blocks, the last one partial)."""
    import deltanet.ops.kernels.function as function

    monkeypatch.setattr(function, "MAX_HEAD_DIM", 16)
    inputs = make_inputs(1, 37, 2, 16, 40, gated, torch.float32, h0=True)
    kernel_matches_naive(gated, inputs, torch.float32, chunk_size=16)


def _cuobjdump() -> Path | None:
    """Triton's bundled cuobjdump (the AOT check reads registers and spill stack with it), found without importing
    triton; None where this triton has no NVIDIA backend."""
    import importlib.util

    spec = importlib.util.find_spec("triton")
    tool = Path(spec.origin).parent / "backends/nvidia/bin/cuobjdump" if spec and spec.origin else None
    return tool if tool and tool.exists() else None


@pytest.mark.slow
@pytest.mark.skipif(_cuobjdump() is None, reason="triton's sm_90 AOT compile (NVIDIA backend, cuobjdump) unavailable")
def test_reference_gated_shape_compiles_without_spills():
    """Every bf16 kernel specialisation launched at Gated DeltaNet's reference head (keys 256, values in launches of
    256, chunk 32) compiles for sm_90 without register spills (``benchmarks/kernels.py --aot-check``, no GPU)."""
    code = ("import sys; sys.path.insert(0, 'benchmarks'); from kernels import aot_check; "
            "sys.exit(aot_check(dims=(256,), chunks=(32,), dtypes=('bf16',)))")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # real compiles
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).parents[1])  # fmt: skip
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("ok", "OVER"))]
    assert proc.returncode == 0 and len(rows) == 14, proc.stdout[-3000:] + proc.stderr[-3000:]
    spilling = [row for row in rows if "spill_stack=0 " not in row]
    assert not spilling, "\n".join(spilling)


@pytest.mark.skipif(IN_PROCESS, reason="the kernel tests run in this process")
def test_kernel_suite_in_subprocess():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          env=env, capture_output=True, text=True, cwd=Path(__file__).parents[1])  # fmt: skip
    print(proc.stdout[-5000:], proc.stderr[-2000:])
    assert proc.returncode == 0, proc.stdout[-5000:]


# ---------------------------------------------------------------------------------------------------------- dispatch


def test_dispatch_resolution():
    assert dispatch.resolve_backend("auto", "cpu") == "naive"
    assert dispatch.resolve_backend("auto", "cuda") == "triton"
    assert dispatch.resolve_backend("naive", "cuda") == "naive"
    assert dispatch.resolve_backend("triton", "cuda") == "triton"
    with pytest.raises(ValueError, match="kernels must be one of"):
        dispatch.resolve_backend("fast", "cpu")


def test_kernels_run_only_up_to_their_declared_key_dim():
    """A 256-wide key head at chunk 64 is beyond ``MAX_KEY_DIM`` (it fits shared memory since keys are tiled, but is
    untuned there): ``auto`` falls back to the naive loop with a warning, ``triton`` and the kernel refuse it."""
    cuda = torch.device("cuda")  # resolution only: nothing runs on it
    assert dispatch.use_kernels("auto", cuda, 32, 256, fused_ok=True)
    with pytest.warns(UserWarning, match="key head dims up to 128, got 256; using the naive loop"):
        assert not dispatch.use_kernels("auto", cuda, 64, 256, fused_ok=True)
    with pytest.raises(ValueError, match="kernels: triton: the Triton kernels launch at chunk_size 64 with key head"):
        dispatch.use_kernels("triton", cuda, 64, 256, fused_ok=True)
    with pytest.raises(ValueError, match="key head dims up to 128 at chunk_size 64"):
        chunk_delta_rule(**make_inputs(1, 20, 1, 256, 16, False, torch.float32, h0=False), chunk_size=64)


def test_dispatch_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(dispatch, "interpreter_enabled", lambda: False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        dispatch.resolve_backend("triton", "cpu")


def test_dispatch_auto_on_cpu_runs_the_naive_loop(monkeypatch):
    """Under ``auto`` on CPU the kernel is never called, even with the interpreter on."""
    import deltanet.ops.delta_rule.chunk as chunk_module

    def boom(*args, **kwargs):
        raise AssertionError("kernel called under kernels=auto on CPU")

    monkeypatch.setattr(chunk_module, "chunk_delta_rule", boom)
    inputs = make_inputs(1, 20, 1, 16, 16, False, torch.float32, h0=False)
    inputs = {n: x.cpu() for n, x in inputs.items()}
    o, _ = dispatch.delta_rule(**inputs, chunk_size=16, backend="auto")
    ref, _ = delta_rule_chunkwise(**inputs, chunk_size=16)
    assert torch.equal(o, ref)


def _variant_params(variant, H, D):
    return variant.make_params(H, D, D) if variant.make_params else None


@pytest.mark.parametrize("variant", all_variants(), ids=lambda v: v.name)
def test_uses_kernel_claim(variant):
    """USES_KERNEL=True: the variant's own naive loop equals the kernel path (values and gradients).
    USES_KERNEL=False: backend=triton still runs the variant's own loop."""
    gated = variant.mixer == "gated"
    H, D, C = 2, 16, 16
    inputs = make_inputs(1, 40, H, D, D, gated, torch.float32, h0=False)
    params = _variant_params(variant, H, D)
    if params is not None:
        params = params.to(DEVICE)
    naive = gated_delta_rule_chunkwise if gated else delta_rule_chunkwise
    routed = dispatch.gated_delta_rule if gated else dispatch.delta_rule
    loop = dict(loop_body=variant.loop_body, init_carry=variant.init_carry, params=params)
    ref = forward_backward(naive, inputs, chunk_size=C, **loop)
    out = forward_backward(routed, inputs, chunk_size=C, backend="triton", fused_ok=variant.uses_kernel, **loop)
    if variant.uses_kernel:
        compare(ref, out, torch.float32, gated)
    else:
        for name in ref:
            assert torch.equal(ref[name], out[name]), f"{variant.name}: {name} differs although USES_KERNEL=False"


def test_model_kernels_field():
    """kernels=triton runs the baselines on the kernels (equal to naive within fp32 rounding) and any other variant
    on its own loop (the model passes USES_KERNEL on as fused_ok): bit-equal to naive."""
    with pytest.raises(ValueError, match="kernels"):
        ModelConfig(vocab_size=16, kernels="fast")
    own_loop = "delta_net_4layer_rope_qk_in_for_loop"
    for variant in ("delta_net_4layer", "gated_delta_net_4layer", own_loop):
        torch.manual_seed(0)
        naive = LanguageModel(ModelConfig(vocab_size=16, variant=variant, dim=32, num_heads=2, head_dim=16,
                                          chunk_size=16, kernels="naive")).to(DEVICE)  # fmt: skip
        tri = LanguageModel(ModelConfig(vocab_size=16, variant=variant, dim=32, num_heads=2, head_dim=16,
                                        chunk_size=16, kernels="triton")).to(DEVICE)  # fmt: skip
        tri.load_state_dict(naive.state_dict())
        tokens = torch.randint(0, 16, (2, 24), generator=torch.Generator().manual_seed(0)).to(DEVICE)
        if variant == own_loop:
            assert torch.equal(naive(tokens), tri(tokens))
        else:
            assert_close(f"{variant} logits", naive(tokens), tri(tokens), 1e-4)


# ------------------------------------------------------------------------------------------------------------ verify


def test_verify_passes_and_writes_outputs(tmp_path, capfd):
    out, md = tmp_path / "k" / "verify.parquet", tmp_path / "k" / "verify.md"
    rc = verify_main(["--quick", "--out", str(out), "--summary", str(md), "--device", DEVICE])
    assert rc == 0, capfd.readouterr().err
    df = pd.read_parquet(out)
    for col in ("op", "B", "T", "H", "D", "chunk_size", "dtype", "tensor", "max_abs_err", "rms_ratio_err",
                "tolerance", "passed"):  # fmt: skip
        assert col in df.columns, col
    assert df["passed"].all()
    assert set(df["op"]) == {"delta", "gated"}
    assert {"o", "final_state", "dq", "dk", "dv", "dbeta", "dg", "dinitial_state"} <= set(df["tensor"])
    assert "0 failed" in md.read_text()


def test_verify_fails_on_a_wrong_kernel(tmp_path, capfd):
    out, md = tmp_path / "verify.parquet", tmp_path / "verify.md"
    rc = verify_main(["--quick", "--out", str(out), "--summary", str(md), "--device", DEVICE,
                      "--inject-fault", "drop_state_update"])  # fmt: skip
    err = capfd.readouterr().err
    assert rc == 1
    assert "FAILED" in err
    assert "delta B=1 T=50 H=2 D=16 C=16 fp32 h0: o" in err or DEVICE == "cuda"
    assert "final_state" in err and "gated" in err
    df = pd.read_parquet(out)  # written even when failing, for the report
    assert not df["passed"].all()
    assert "Failing checks" in md.read_text()


# -------------------------------------------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@needs_cuda
def test_verify_full_grid_cuda(tmp_path):
    rc = verify_main(["--out", str(tmp_path / "v.parquet"), "--summary", str(tmp_path / "v.md"), "--device", "cuda"])
    assert rc == 0
