# Set-up and the two README commands. `make run` installs and runs the main job on the
# embedded default; `make test` installs and runs the test suite.
#
# torch: if the virtual environment has no torch yet, the CPU build torch==2.13.0 is
# installed first, so pip never pulls a multi-GB CUDA build for the `torch>=2.1`
# requirement. A GPU user installs their own CUDA torch into the venv beforehand and it
# is kept.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WHEEL := .cache/recbole-1.2.1-py3-none-any.whl

RB_VENV := .venv-recbole
RB_BIN := $(RB_VENV)/bin

.PHONY: install install-test data-ml100k run test test-recbole recbole-env lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e .

install-test: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[dev]"

# Real MovieLens-100k for the tests: the recbole==1.2.1 wheel ships it (not installed).
$(WHEEL):
	mkdir -p .cache
	$(BIN)/python -m pip download --no-deps recbole==1.2.1 -d .cache

data-ml100k: $(WHEEL)

# A verdict is a result, not an error: exit 1 (a claim FAILs), 3 (INCONCLUSIVE) and 4
# (VACUOUS) end `make run` normally after the table; 2 (bad input) or anything else is an error.
run: install
	@$(BIN)/radius verify --theorem all; code=$$?; \
	if [ $$code -eq 0 ] || [ $$code -eq 1 ] || [ $$code -eq 3 ] || [ $$code -eq 4 ]; then \
	  echo "radius verify exited $$code (0 all PASS, 1 a claim FAILs, 3 INCONCLUSIVE, 4 VACUOUS): see the table above"; \
	else exit $$code; fi

test: install-test data-ml100k
	$(BIN)/python -m pytest -q

# RecBole 1.2.1 (radius.adapters.recbole, examples/recbole_multivae.py) needs numpy < 2,
# which radius's own environment does not pin, so it gets its own environment: the CPU
# torch from disk, radius with numpy < 2, RecBole from the wheel data-ml100k already
# fetched (--no-deps: its ray/plotly/hyperopt extras are not needed by Config,
# create_dataset, data_preparation and Trainer) and the few packages those import.
$(RB_BIN)/python:
	$(PYTHON) -m venv $(RB_VENV)

recbole-env: $(RB_BIN)/python data-ml100k
	$(RB_BIN)/python -c "import torch" 2>/dev/null || $(RB_BIN)/python -m pip install -q torch==2.13.0 "numpy<2"
	$(RB_BIN)/python -m pip install -q -e . pytest hypothesis "numpy<2" "pandas<3"
	$(RB_BIN)/python -m pip install -q --no-deps $(WHEEL)
	$(RB_BIN)/python -m pip install -q "numpy<2" "pandas<3" "colorlog==4.7.2" "colorama==0.4.4" \
	  pyyaml tabulate texttable thop tensorboard

# The adapter and example tests on RecBole's real classes (a missing recbole fails here).
test-recbole: recbole-env
	RADIUS_REQUIRE_RECBOLE=1 $(RB_BIN)/python -m pytest -q -p no:cacheprovider \
	  tests/test_adapters.py tests/test_examples.py -k recbole

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_transfer.py

clean:
	rm -rf runs .pytest_cache .hypothesis $(RB_VENV)
