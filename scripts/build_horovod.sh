#!/usr/bin/env bash
# Build and install Horovod (the optional `engine.exchange = "horovod"` backend) against the
# TensorFlow and the MPI installed on this machine.
#
#   bash scripts/build_horovod.sh            # build (or reuse the cached wheel), then install
#   HOROVOD_WHEEL_CACHE=/some/dir bash scripts/build_horovod.sh
#
# Needs cmake, a C++17 compiler and MPI headers (Debian: cmake g++ libopenmpi-dev; installed
# here as root with apt-get when missing). Idempotent: a working horovod.tensorflow built with
# MPI is left alone; otherwise a wheel cached for this TensorFlow + Python is installed; only
# then is the PyPI sdist built (~4-5 min on 2 cores).
#
# The one source patch: horovod 0.28.1 (its last release) compiles horovod/tensorflow/
# xla_mpi_ops.cc, whose XLA headers no longer compile against newer TensorFlow (2.21:
# `highwayhash/arch_specific.h` not found). Those XLA ops only serve horovod calls inside
# jit_compile functions, which cluster-sim never makes (it exchanges spikes between XLA
# intervals), so that file is dropped from the build - but only when a preprocessor probe of
# its TensorFlow headers fails; against TensorFlow <= 2.12 it builds unpatched.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VERSION=${HOROVOD_VERSION:-0.28.1}
say() { echo "build_horovod: $*"; }

if "$PY" - <<'EOF' 2>/dev/null
import horovod.tensorflow as hvd, sys
sys.exit(0 if hvd.mpi_built() else 1)
EOF
then
  say "horovod $("$PY" -c 'import horovod;print(horovod.__version__)' 2>/dev/null) with MPI already installed; nothing to do"
  exit 0
fi

tf_version=$("$PY" -c 'import tensorflow as tf;print(tf.__version__)' 2>/dev/null) \
  || { say "TensorFlow is not importable by $PY; run scripts/setup.sh first"; exit 1; }
py_tag=$("$PY" -c 'import sys;print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
# A horovod wheel links against one TensorFlow's C++ ABI: key the cache on both versions.
cache=${HOROVOD_WHEEL_CACHE:-.ci/cache/horovod}/tf-$tf_version-$py_tag
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
wheel=$(ls "$cache"/horovod-"$VERSION"-*.whl 2>/dev/null | head -1 || true)

if [ -z "$wheel" ]; then
  missing=""
  command -v cmake >/dev/null || missing="$missing cmake"
  command -v g++ >/dev/null || missing="$missing g++"
  command -v mpicxx >/dev/null || missing="$missing libopenmpi-dev"
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing$missing with apt-get"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null
    else
      say "missing build tools:$missing (Debian: apt-get install cmake g++ libopenmpi-dev)"
      exit 1
    fi
  fi

  work=$(mktemp -d /tmp/build_horovod.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  say "downloading the horovod $VERSION sdist"
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
    "horovod==$VERSION" -d "$work"
  tar xzf "$work"/horovod-"$VERSION".tar.gz -C "$work"
  src="$work/horovod-$VERSION"

  flags=$("$PY" -c 'import tensorflow as tf;print(" ".join(tf.sysconfig.get_compile_flags()))' 2>/dev/null)
  probe='#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/xla/client/xla_builder.h"
#include "tensorflow/compiler/xla/service/custom_call_target_registry.h"'
  # shellcheck disable=SC2086  # flags is a list of compiler arguments
  if echo "$probe" | g++ -E -x c++ $flags - >/dev/null 2>&1; then
    say "TensorFlow $tf_version: XLA headers compile, building unpatched"
  else
    say "TensorFlow $tf_version: XLA headers do not compile; dropping xla_mpi_ops.cc from horovod/tensorflow/CMakeLists.txt"
    sed -i '/horovod\/tensorflow\/xla_mpi_ops.cc/d' "$src/horovod/tensorflow/CMakeLists.txt"
  fi

  say "building the wheel (MPI + TensorFlow, no PyTorch/MXNet/Gloo)"
  start=$(date +%s)
  # No build isolation: the build must see the installed TensorFlow it links against.
  ( cd "$src" && HOROVOD_WITH_MPI=1 HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 \
      HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_GLOO=1 HOROVOD_CPU_OPERATIONS=MPI \
      MAKEFLAGS=${MAKEFLAGS:--j$(nproc)} \
      "$PY" -m pip wheel --disable-pip-version-check -q --no-deps --no-build-isolation \
      -w "$cache" . )
  wheel=$(ls "$cache"/horovod-"$VERSION"-*.whl | head -1)
  say "built $wheel in $(( $(date +%s) - start )) s"
else
  say "reusing cached $wheel"
fi

"$PY" -m pip install --disable-pip-version-check -q "$wheel"
"$PY" - <<'EOF'
import horovod.tensorflow as hvd
assert hvd.mpi_built(), "horovod was built without MPI"
import horovod
print(f"build_horovod: horovod {horovod.__version__} installed (MPI: yes, TensorFlow: yes)")
EOF
