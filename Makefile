# Entry points. `make study` and `make test` are the README's two commands.
VENV ?= .venv
SCALE ?= cpu
STAMP := $(VENV)/.lskd-ready

.PHONY: setup study test bench clean-venv

$(STAMP): setup.py scripts/setup_env.sh
	bash scripts/setup_env.sh

setup: $(STAMP)

study: $(STAMP)
	bash scripts/main_job.sh $(SCALE)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/run_all.py

clean-venv:
	rm -rf $(VENV)
