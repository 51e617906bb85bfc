"""Results on disk: SONATA spikes and reports written chunk by chunk (SWMR, so a killed run
leaves readable files), atomic checkpoints, and run.json."""
