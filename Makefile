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

# llama-cpp-python compiles llama.cpp (3-6 min on 2 cores). It is built for a portable
# x86-64 (AVX2, FMA, F16C), not with -march=native: a native build on this project's
# machines (Xeon with AMX) crashes in batched decoding, a segfault in llama_decode on any
# prompt longer than one token (measured 2026-12-05). The wheel is kept in a cache of our
# own, keyed by version and flags, so pip's wheel cache can never hand back a build made
# with other flags, and a second install does not compile again.
LLAMA_VERSION := $(shell sed -n 's/^llama_cpp_python==//p' constraints.txt)
LLAMA_CMAKE   := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_WHEELS  := $(HOME)/.cache/failover-router/llama-$(LLAMA_VERSION)-$(shell echo '$(LLAMA_CMAKE)' | cksum | cut -d' ' -f1)

$(VENV)/.installed: pyproject.toml constraints.txt Makefile | $(BIN)/python
	@ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS='$(LLAMA_CMAKE)' $(BIN)/python -m pip wheel --quiet --no-deps --no-cache-dir \
			-w $(LLAMA_WHEELS) 'llama-cpp-python==$(LLAMA_VERSION)'
	$(BIN)/python -m pip install --quiet -c constraints.txt --find-links $(LLAMA_WHEELS) \
		--only-binary llama-cpp-python -e '.[local,redis,dev]'
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
