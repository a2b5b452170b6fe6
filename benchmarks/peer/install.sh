#!/usr/bin/env bash
# Installs the PyTorch eager peer's runtime from Debian: python3-torch (PyTorch as Debian packages it) and the
# OpenMP build of OpenBLAS. The peer runs with /usr/bin/python3 (Debian's interpreter, which sees these packages).
set -euo pipefail
if /usr/bin/python3 -c 'import torch' 2>/dev/null && dpkg -s libopenblas0-openmp >/dev/null 2>&1; then
  echo "python3-torch and libopenblas0-openmp are already installed"; exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y python3-torch libopenblas0-openmp
/usr/bin/python3 -c 'import torch; print("torch", torch.__version__)'
