"""The process environment a run lives in, shared by both execution modes: device and threads,
the MPI context, stop signals and the progress line. Nothing here integrates or writes results."""
