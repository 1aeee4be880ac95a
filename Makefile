# Entry points. `make study` and `make test` are the README's two commands.
VENV ?= .venv
SCALE ?= cpu
STAMP := $(VENV)/.lskd-ready

.PHONY: setup study test bench gpu-check clean-venv

$(STAMP): setup.py scripts/setup_env.sh
	bash scripts/setup_env.sh

setup: $(STAMP)

study: $(STAMP)
	bash scripts/main_job.sh $(SCALE)

# two workers (pytest-xdist), one per core; a test file stays on one worker (its module fixtures once)
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=10 tests

# every benchmark (quick versions) and one summary of ratios against targets;
# make bench BENCH_ARGS=--full for the benchmarks' own (slow) settings
bench: $(STAMP)
	$(VENV)/bin/python benchmarks/run_all.py $(BENCH_ARGS)

# the CUDA paths in one short run on one GPU (refuses to run without CUDA)
gpu-check: $(STAMP)
	VENV=$(VENV) bash scripts/gpu_check.sh

clean-venv:
	rm -rf $(VENV)
