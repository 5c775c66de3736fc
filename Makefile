# Two commands for a newcomer: `make demo` (the main job) and `make test`.
# Both create .venv and install everything on a fresh Debian machine, and do
# nothing more than a timestamp check when it is already installed.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.eva-installed
DEMO_OUT ?= runs/demo
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: demo test test-slow bench env system-deps clean

env: $(STAMP)

# Debian libraries for headless MuJoCo rendering (EGL through Mesa, OSMesa as fallback).
system-deps:
	@missing=""; for p in libegl1 libgl1-mesa-dri libosmesa6; do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml constraints.txt | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	# torch first, torchvision pinned in the same command (DESIGN.md section 5)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[all]"
	# LPIPS weights, once, into $$EVA_CACHE or ~/.cache/eva (world_model/metrics.py)
	$(BIN)/python -m world_model.metrics fetch
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/eva-collect experiment=demo dataset.root=$(DEMO_OUT)/dataset
	$(BIN)/eva-eval experiment=demo output_dir=$(DEMO_OUT)/eval
	$(BIN)/eva-report run_dir=$(DEMO_OUT)
	@echo "report: $(DEMO_OUT)/report.md"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	mkdir -p runs
	$(BIN)/eva-bench-sim | tee runs/bench_sim.txt

clean:
	rm -rf $(VENV) runs outputs
