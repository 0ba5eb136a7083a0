# The README's two commands: `make lab` (the main job, on the local lab host) and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
GUEST ?= default

.PHONY: install lab test unit integration lint lab-down

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --editable '.[dev]'
	touch $@

# Bring up the lab guest, deploy both services onto it, run the post-deploy checks, show status.
# HUB=1: both models from the lab's hub mirror (`source: hub`, group_data/hub/), as on a real host.
lab: install
	$(BIN)/llmhost lab up --name $(GUEST) $(if $(HUB),--mirror)
	$(BIN)/pyinfra -y inventories/lab.py deploy.py --limit lab-$(GUEST) \
	  $(if $(HUB),--group-data group_data/hub)
	$(BIN)/pytest tests/host --inventory inventories/lab.py --limit lab-$(GUEST)
	$(BIN)/llmhost status inventories/lab.py --limit lab-$(GUEST)

lab-down: install
	$(BIN)/llmhost lab down --name $(GUEST)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: install
	$(BIN)/pytest tests/unit

# Fresh guests: converge, converge again (zero changes), verify, bad input, failure drills,
# rebuild, destroy. Two guests at once, a worker and a guest each, a module at a time, the
# longest first (tests/integration/conftest.py);
# -rP prints what each drill measured.
integration: install
	$(BIN)/pytest tests/integration -n 2 --dist loadfile --no-loadscope-reorder -rP \
	  --durations=0

test: lint unit integration
