# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test doctor clean runtime-debs test-debs

# Debian packages: OpenCV's GUI build needs libGL/glib at run time; the tests drive a virtual
# display and real key presses. Installed only when we are root (CI, containers).
RUNTIME_DEBS := libgl1 libglib2.0-0
TEST_DEBS    := xvfb xdotool x11-utils

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files re-run the install only when a requirements file changes.
$(VENV)/.installed: $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt requirements-diffusion.txt requirements-reference.txt
	$(BIN)/pip install --quiet -r requirements-test.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-reference.txt
	@touch $@

define install_debs
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	fi
endef

runtime-debs:
	$(call install_debs,$(RUNTIME_DEBS))

test-debs: runtime-debs
	$(call install_debs,$(TEST_DEBS))

run: runtime-debs $(VENV)/.installed
	$(BIN)/facecast run $(ARGS)

test: test-debs $(VENV)/.installed-test
	$(BIN)/python -m pytest $(ARGS)

doctor: $(VENV)/.installed
	$(BIN)/facecast doctor

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
