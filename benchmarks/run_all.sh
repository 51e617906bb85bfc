#!/usr/bin/env bash
# Run every benchmark in sequence (full versions; pass --quick for the smoke-test versions).
# Output: Markdown tables on stdout, results in benchmarks/results/.
set -u
cd "$(dirname "$0")/.."
for b in cobahh antennal_lobe memory_duration kernel_loop; do
  echo "### benchmarks/$b.py $*"
  python "benchmarks/$b.py" "$@"
done
