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
	# setuptools below 80: colcon-core (ROS 2 workspace builds) requires it
	$(BIN)/python -m pip install -q --upgrade pip "setuptools<80" wheel
	# torch first, torchvision pinned in the same command (DESIGN.md section 5)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[all]"
	# LPIPS weights, once, into $$EVA_CACHE or ~/.cache/eva (world_model/metrics.py)
	$(BIN)/python -m world_model.metrics fetch
	touch $(STAMP)

# The whole story on a preset small enough for two CPU cores in about 30 minutes: collect, train the
# IDM, SFT the world model, calibrate P_0, GRPO, evaluate before and after, one report.
demo: $(STAMP)
	$(BIN)/eva-collect render=top_only dataset.root=$(DEMO_OUT)/data/train dataset.episodes_per_task=12 dataset.seed=0 workers=2
	$(BIN)/eva-collect render=top_only dataset.root=$(DEMO_OUT)/data/test dataset.episodes_per_task=5 dataset.seed=1 workers=2
	$(BIN)/eva-train-idm dataset_root=$(DEMO_OUT)/data/train run_dir=$(DEMO_OUT)/idm max_minutes=4 eval_every=250 checkpoint_every=250
	$(BIN)/eva-train-wm dataset_root=$(DEMO_OUT)/data/train run_dir=$(DEMO_OUT)/wm max_minutes=7
	$(BIN)/eva-grpo-experiment checkpoint=$(DEMO_OUT)/wm/model idm_checkpoint=$(DEMO_OUT)/idm/model \
	  train_dataset=$(DEMO_OUT)/data/train test_dataset=$(DEMO_OUT)/data/test output_dir=$(DEMO_OUT) \
	  rewards=[executability] episodes_per_task=5 'calibrate_overrides=["num_prompts=32"]' \
	  'grpo_overrides=["max_minutes=6","checkpoint_every=5","video_every=5"]' \
	  'eval_overrides=["num_windows=16","steps=10","sampler=euler"]'
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
