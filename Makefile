# Two commands on a fresh machine: `make demo` (answer a prompt) and `make test`.
# Each creates .venv, installs the pinned packages and fetches the local model if missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MODEL  := models/SmolLM2-135M-Instruct.Q4_1.gguf
PROMPT ?= In one sentence, why do circuit breakers help when an API is down?

.PHONY: install model redis-server demo run test bench clean

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

# The tests start their own redis-server on a free port (tests/redis_server.py); they need
# the binary, from the Debian package. Nothing here starts or uses a system-wide Redis.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }

demo: install model
	$(BIN)/router complete "$(PROMPT)"

run: demo

test: install model redis-server
	$(BIN)/python -m pytest -q

bench: install model
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
