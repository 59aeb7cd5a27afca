# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test doctor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files re-run the install only when a requirements file changes.
$(VENV)/.installed: $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(BIN)/pip install --quiet -r requirements-test.txt
	@touch $@

# Debian packages the tests drive for real (virtual display, key presses, codecs for OpenCV).
# Installed only when we are root (CI, containers); otherwise the tests that need them skip.
system-packages:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in xvfb xdotool libgl1 libglib2.0-0; do \
	    dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	fi

run: $(VENV)/.installed
	$(BIN)/facecast run $(ARGS)

test: system-packages $(VENV)/.installed-test
	$(BIN)/python -m pytest $(ARGS)

doctor: $(VENV)/.installed
	$(BIN)/facecast doctor

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
