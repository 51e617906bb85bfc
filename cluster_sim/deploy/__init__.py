"""Deployment beside the simulator: SLURM templates, submission and tracking, sweeps, scaling
studies, container definitions. Nothing here imports TensorFlow."""
