# Two commands set everything up on a fresh machine: `make run` and `make test`. Both are thin
# wrappers over installing this package (pyproject.toml) into .venv; `pip install ".[cpu]"`
# does the same anywhere, make or not (README: pip, pipx, uv, Windows).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=
# `make test` runs the lint (ruff check, ruff format --check) and the type checker (mypy) before
# the tests; LINT=0 skips the lint, TYPECHECK=0 the type checker (docs/ARCHITECTURE.md, "Checks").
# (make has a built-in LINT variable, so `?=` would not take: set it unless the user did.)
ifeq ($(origin LINT),default)
LINT := 1
endif
TYPECHECK ?= 1

.PHONY: run test lint typecheck gpu cpu doctor clean runtime-debs test-debs

# --- installer: uv when it is on PATH (several times faster), pip otherwise -----------------------
UV ?= $(shell command -v uv 2>/dev/null)
ifneq ($(UV),)
# uv reads neither pip.conf nor PIP_* variables: hand it pip's settings on this machine (find-links
# with the CPU torch wheel, extra indexes, the torch constraint, the CA bundle) as its own. pip
# takes the best version across all its indexes; uv stops at the first index that has a package
# unless told otherwise, so with extra indexes it is told to do as pip does.
pip_setting = $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.$(1)='\(.*\)'$$/\1/p" | head -n 1)
uv_setting  = $(if $($(2)),,$(if $(call pip_setting,$(1)),$(2)="$(call pip_setting,$(1))"))
UV_ENV := $(call uv_setting,find-links,UV_FIND_LINKS) $(call uv_setting,index-url,UV_INDEX_URL) \
          $(call uv_setting,extra-index-url,UV_EXTRA_INDEX_URL) $(call uv_setting,constraint,UV_CONSTRAINT) \
          $(call uv_setting,cert,SSL_CERT_FILE)
ifneq ($(findstring UV_EXTRA_INDEX_URL,$(UV_ENV))$(UV_EXTRA_INDEX_URL),)
UV_ENV += $(if $(UV_INDEX_STRATEGY),,UV_INDEX_STRATEGY=unsafe-best-match)
endif
NEW_VENV  = $(UV) venv --quiet --python-preference only-system --python $(PYTHON) $(VENV)
INSTALL   = $(UV_ENV) $(UV) pip install --quiet --python $(BIN)/python
UNINSTALL = $(UV) pip uninstall --quiet --python $(BIN)/python
else
# pip 25.1 is the first to install dependency groups (--group).
NEW_VENV  = $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
INSTALL   = $(BIN)/python -m pip install --quiet
UNINSTALL = $(BIN)/python -m pip uninstall --quiet --yes
endif

# --- onnxruntime: the CPU build, or the GPU build after `make gpu` ---------------------------------
# onnxruntime and onnxruntime-gpu overwrite each other's files. `make gpu` leaves this mark in the
# venv, and from then on every install here asks for the `gpu` extra instead of `cpu`, so no later
# `make run` or `make test` brings the CPU build back. `make cpu` goes back.
GPU_MARK := $(VENV)/.gpu
ORT      = $(if $(wildcard $(GPU_MARK)),gpu,cpu)

# Debian packages: OpenCV's GUI build needs libGL/glib at run time; the tests drive a virtual
# display and real key presses, and the control panel in a real browser (chromium, driven by
# Playwright). Installed only when we are root (CI, containers).
RUNTIME_DEBS := libgl1 libglib2.0-0
TEST_DEBS    := xvfb xdotool x11-utils chromium

$(BIN)/python:
	$(NEW_VENV)

# Stamp files re-run an install only when what it reads changed.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(INSTALL) -e ".[$(ORT)]"
	@touch $@

# The reference implementations the equivalence tests compare against are installed --no-deps
# (their declared dependencies would replace our OpenCV): see requirements-reference.txt.
$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml requirements-reference.txt
	$(INSTALL) -e ".[$(ORT),diffusion,replicas]" --group test
	$(INSTALL) --no-deps -r requirements-reference.txt
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

test: test-debs $(VENV)/.installed-test $(if $(filter 1,$(LINT)),lint) $(if $(filter 1,$(TYPECHECK)),typecheck)
	$(BIN)/python -m pytest $(ARGS)

# Every check runs, then the target fails if any found something.
lint: $(VENV)/.installed-test
	@status=0; \
	$(BIN)/ruff check src tests tools || status=1; \
	$(BIN)/ruff format --check src tests tools || status=1; \
	exit $$status

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# NVIDIA GPU: onnxruntime-gpu with TensorRT instead of the CPU onnxruntime (docs/GPU.md).
gpu: $(BIN)/python
	$(UNINSTALL) onnxruntime onnxruntime-gpu
	$(INSTALL) -e ".[gpu]"
	@touch $(GPU_MARK) $(VENV)/.installed
	$(BIN)/facecast doctor

# Back to the CPU build.
cpu: $(BIN)/python
	$(UNINSTALL) onnxruntime-gpu onnxruntime
	@rm -f $(GPU_MARK)
	$(INSTALL) -e ".[cpu]"
	@touch $(VENV)/.installed

doctor: $(VENV)/.installed
	$(BIN)/facecast doctor

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .mypy_cache .ruff_cache
