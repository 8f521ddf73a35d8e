"""The training engine behind ``deltanet train``, one concern per module.

- :mod:`.protocol`: the MAD rules as pure functions (best epoch by test perplexity, early stop, divergence).
- :mod:`.loop`: one run — seed, build model, AdamW + per-epoch cosine, train/eval epochs, resume from a checkpoint.
- :mod:`.job`: one variant × task job — plan the runs, skip finished ones, checkpoint dir, atomic parquet output.
- :mod:`.provenance`: git commit, versions, device name, file hashes (variant, lock, image), peak memory.
- :mod:`.lockfile`: reads the hash-checked lock files in ``requirements/``.

Test hooks (environment variables; unset in normal use):

- ``DELTANET_STOP_AFTER_EPOCHS=N`` (:mod:`.job`): after N epochs of this invocation are trained and checkpointed,
  stop the job as if it had been killed (exit code 3). Used to test kill-and-resume.
- ``DELTANET_FORCE_NAN=RUN:EPOCH`` (:mod:`.loop`): in run number RUN (1-based, job order) make the training loss
  NaN from epoch EPOCH on, so the divergence path can be tested on any variant.
"""
