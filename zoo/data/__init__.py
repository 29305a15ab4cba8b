"""Input pipelines: ``images`` (digits, image folders, TFRecords), ``text`` (labelled files,
corpora, text pairs), ``splits`` (seeded train / eval splits) and ``order`` (per-epoch
permutations, length-bucketed batches)."""
