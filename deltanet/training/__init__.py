"""The training engine behind ``deltanet train``, one concern per module.

- :mod:`.protocol`: the MAD rules as pure functions (best epoch by test perplexity, early stop, divergence).
- :mod:`.loop`: one run — seed, build model, AdamW + per-epoch cosine, train/eval epochs, resume from a checkpoint.
- :mod:`.job`: one variant × task job — plan the runs, skip finished ones, checkpoint dir, atomic parquet output.
- :mod:`.cli`: ``deltanet train``: argument checks (one error line, exit 2), the malloc re-exec, then the job.
- :mod:`.provenance`: git commit, versions, device name, file hashes (variant, lock, image), peak memory.
- :mod:`.lockfile`: reads the hash-checked lock files in ``requirements/``.

Test seams are arguments, never environment variables: ``run_job(job, JobHooks(after_epoch=..., loss=...))`` lets
a test stop a job after N checkpointed epochs (as a kill would) or make a run's loss NaN.
"""
