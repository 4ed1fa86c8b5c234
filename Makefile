# The two commands of the README. Both set the machine up first (idempotent).
.PHONY: setup demo demo-text test bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/slimship demo

demo-text: setup
	.venv/bin/slimship demo --text

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python benchmarks/demo_vs_peer.py
