"""The training engine behind ``deltanet train`` (the command itself: ``deltanet/cli/train.py``), one concern per
module.

- :mod:`.job`: one variant × task job — plan the runs, skip finished ones, the checkpoint dir, SIGTERM, the parquet.
- :mod:`.loop`: one fused group of runs, epoch by epoch (the driver, the group's steps, resume).
- :mod:`.protocol`: what a run decides after an epoch (best epoch, early stop, divergence).
- :mod:`.fused`: the members stacked and run under ``vmap``; :mod:`.optim`: AdamW over stacked members.
- :mod:`.capture`: steps replayed from CUDA graphs; :mod:`.checkpoint`: the group's checkpoint file.
- :mod:`.device`: the training device (``--device auto|cpu|cuda``) and the process-wide matmul precision.
- :mod:`.smoke`: the smoke check (``deltanet smoke``): every setting of a scale at its real shapes, a few steps.
- :mod:`.provenance`: git commit, versions, device name, file hashes (variant, lock, image), peak memory;
  :mod:`.lockfile`: reads the hash-checked lock files in ``requirements/``.

Test seams are arguments, never environment variables: ``run_job(job, JobHooks(after_epoch=..., loss=...))`` lets
a test stop a job after N checkpointed epochs (as a kill would) or make a run's loss NaN.
"""
