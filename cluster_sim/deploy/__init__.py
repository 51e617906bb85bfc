"""Deployment beside the simulator: SLURM templates, submission and tracking, sweeps, scaling
studies, container definitions. Nothing here imports TensorFlow.

Imports run one way (top to bottom, never back): ``cli`` -> ``runs`` (single runs, ``open_run``)
-> ``sweep``/``study`` -> ``folder`` (the :class:`~cluster_sim.deploy.folder.RunFolder`) ->
``results``/``render``/``slurm``/``tables``/``timelimit``. ``local`` (running ``cluster-sim``
here, under mpiexec) stands beside ``slurm`` and imports nothing else of the project."""
