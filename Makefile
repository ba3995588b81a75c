# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test setup bench clean

setup: $(STAMP)

# torch first, pinned: on these machines `torch==2.13.0` resolves to the local CPU wheel
# (pip's find-links), so a box without a GPU never pulls several GB of CUDA wheels; on a
# GPU box the same pin gets the CUDA build. pip then leaves it alone for `torch>=2.1`.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m mergetui.demo

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) benchmarks/bench_merge.py

clean:
	rm -rf $(VENV) demo bench-out
