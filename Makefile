# Two commands on a fresh machine: `make demo` (answer a prompt) and `make test`.
# Each creates .venv, installs the pinned packages and fetches the local model if missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MODEL  := models/SmolLM2-135M-Instruct.Q4_1.gguf
PROMPT ?= In one sentence, why do circuit breakers help when an API is down?

.PHONY: install model demo run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip keeps the llama-cpp-python wheel it compiled (~6 min on 2 cores) in its cache,
# so a second install reuses it instead of compiling again.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[local,redis,dev]'
	touch $@

install: $(VENV)/.installed

$(MODEL): | $(VENV)/.installed
	$(BIN)/python -m router.models pull

model: $(MODEL)

demo: install model
	$(BIN)/router complete "$(PROMPT)"

run: demo

test: install model
	$(BIN)/python -m pytest -q

bench: install model
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
