#!/usr/bin/env bash
# Set up cluster-sim on a fresh machine (Debian/Ubuntu, or any machine with Python >= 3.10).
#
#   bash scripts/setup.sh            # Python package + test tools; as root with apt: also
#                                    # SLURM/munge/PMIx/Open MPI for the SLURM and MPI tests,
#                                    # and horovod (scripts/build_horovod.sh; wheel cached)
#   bash scripts/setup.sh --no-system  # only the Python package (enough to run jobs)
set -euo pipefail
cd "$(dirname "$0")/.."

system=1
[ "${1:-}" = "--no-system" ] && system=0

PY=${PYTHON:-python3}
if [ "$system" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  bash scripts/slurm_local.sh install
fi
"$PY" -m pip install --disable-pip-version-check -q -e ".[test]"
if [ "$system" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # The optional horovod exchange is tested too; a rerun reuses .ci/cache/horovod.
  PYTHON="$PY" bash scripts/build_horovod.sh
fi
"$PY" -c "import cluster_sim, h5py, dask; print('cluster-sim', cluster_sim.__version__, 'ready')"
