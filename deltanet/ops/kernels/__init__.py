"""Our Triton kernels, shared by the chunked delta rule and the chunked gated delta rule (forward and backward).

Written from the math of ``docs/deltanet-math.md`` §1.2 / §2.2 (the naive ops in this package are the reference).
One head, one chunk of C rows, q already scaled, G = within-chunk cumsum of g (G ≡ 0 ungated),
Γ_ij = e^{G_i − G_j} for i ≥ j (0 above), S_n = state entering chunk n::

    A   = strict_lower(diag(β) K Kᵀ ⊙ Γ)          T = (I + A)⁻¹            (UT transform)
    X   = diag(β) K ⊙ e^G    W = T X               Y = diag(β) V    U = T Y
    Vn  = U − W S_n                                  (corrected pseudo-values, "v_new")
    P   = Q Kᵀ ⊙ Γ ⊙ M                               (M: causal, diagonal kept)
    O   = (Q ⊙ e^G) S_n + P Vn
    S_{n+1} = e^{G_L} S_n + (K ⊙ e^{G_L − G})ᵀ Vn     (G_L = G of the chunk's last row)

One file per stage, like fla's ``wy_fast.py`` / ``chunk_delta_h.py`` / ``chunk_o.py`` (grid in brackets;
bh = batch·head, NV = value-dim blocks, NK = key tiles of at most 64 columns):

- ``wy.py``           ``wy_fwd_kernel`` [NT, BH]: G, A, T by forward substitution, W, U, and P (saved with them: the
  output and the backward read it instead of recomputing Q Kᵀ per value block).
- ``chunk_state.py``  ``fwd_h_kernel`` [NV, BH]: sequential over chunks, stores S_n and Vn, returns the final state;
  ``bwd_dh_kernel`` [NV, BH]: reverse over chunks, dS_{n+1} (stored), dVn = Pᵀ dO + K̃ dS_{n+1},
  dS_n = e^{G_L} dS_{n+1} + (Q⊙e^G)ᵀ dO − Wᵀ dVn; returns dS_0 (the initial-state gradient). Both keep the state
  of one value block in registers as up to four key tiles.
- ``chunk_output.py`` ``fwd_o_kernel`` [NV, NT, BH]: the output.
- ``backward.py``     ``bwd_vloop_kernel`` [NK, NT, BH], ``bwd_post_kernel`` [NT, BH], ``bwd_dqk_kernel``
  [NK, NT, BH]: per chunk, dq, dk, dv, dβ, dg (through W/U = T X / T Y and the solve: dT = dW Xᵀ + dU Yᵀ,
  dX = Tᵀ dW, dY = Tᵀ dU, dA = −Tᵀ dT Tᵀ; dg = reverse cumsum of dG): the sums over value blocks (and dv), the
  [C, C] algebra over the whole key dimension, then dq and dk per key tile (in ``bwd_post_kernel`` itself for one
  small key tile).
- ``primitives.py``   the ``@triton.jit`` helpers the kernels share (block loads and stores, Γ, the UT solve).
- ``launch.py``       interpreter or compiler (the one place that knows), chunk sizes, block sizes per launch.
- ``function.py``     the stages wired into forward and backward, the ``autograd.Function``, and ``chunk_rule``,
  the checked entry point that ``delta_rule/chunk.py`` and ``gated_delta_rule/chunk.py`` call.

Inputs keep the user layout ``[B, T, H, D]`` (rows past T are masked to zero, which is exactly zero padding:
k = v = β = g = 0 leaves the state alone). Intermediates are fp32, heads-first and padded to NT·C rows.
All accumulation is fp32; fp32 inputs use 3-pass tf32 dots (≈ IEEE fp32), fp16/bf16 inputs tf32 dots.

Nothing is imported here: triton fixes interpreter-or-compiler when a kernel is decorated, so the stage modules are
imported only on first use (see ``launch.py``).
"""
