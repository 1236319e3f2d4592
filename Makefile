# Two commands: `make demo` and `make test`. Both set everything up first.
# `make fuzz` fuzzes every reader for FUZZ_SECONDS (10 minutes) in rounds of random examples.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: setup demo test fuzz bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/transferkit demo

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

# The long fuzzing profile (tests/test_fuzz_readers.py, TRANSFERKIT_FUZZ=long), round after
# round with fresh random examples until FUZZ_SECONDS have passed (the last round finishes);
# a failure stops at once and is kept in .hypothesis/ to be replayed first next time.
FUZZ_SECONDS ?= 600
fuzz: setup
	@end=$$(( $$(date +%s) + $(FUZZ_SECONDS) )); round=0; \
	while [ $$(date +%s) -lt $$end ]; do \
	  round=$$((round + 1)); echo "fuzz round $$round"; \
	  HF_HUB_OFFLINE=1 TRANSFERKIT_FUZZ=long $(BIN)/python -m pytest -q -p no:xdist \
	    tests/test_fuzz_readers.py || exit 1; \
	done; echo "fuzz: $$round round(s) in $(FUZZ_SECONDS) s, no failure"

clean:
	rm -rf $(VENV) runs .pytest_cache
