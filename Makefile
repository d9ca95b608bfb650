# make demo: train + evaluate the input image, BottleNet and the two learned codecs on real Fashion-MNIST (2 CPU cores).  make test: the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-slow test-onnx lint smoke repro data clean gpu-wheels

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.data-installed: setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[data]'
	touch $@

$(VENV)/.test-installed: setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Fashion-MNIST: Debian's package when apt works here, else the builder tries TFDS's download,
# else it prints one line saying how to get the files.
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ] || [ -n "$$FASHION_MNIST_DIR" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null) || \
	  echo "apt-get could not install dataset-fashion-mnist; will try TFDS's download"; \
	else echo "no local Fashion-MNIST and no root apt-get; will try TFDS's download"; fi

demo: $(VENV)/.data-installed data
	$(PY) -m bottlenet_jax.demo

# The test suite in two stages: `make test` (the README's command) runs everything but the tests
# marked slow (end-to-end training, serving and the exhaustive exactness sweeps, each > ~30 s);
# `make test-slow` runs those; CI (.ci/run) runs both. The tests compile with XLA's CPU optimisation
# level 1 (tests/conftest.py: a fifth of the compile time); the slow stage keeps XLA's default.
# Both stages run on two pytest-xdist workers (most tests compile on one core); the tests that share
# the session's demo exports run on one worker (`xdist_group`), so they are built once. make test's
# environment has no TensorFlow and no torch (setup.cfg's `test` extra; ~1 min less set-up), which
# the slow stage adds.
XDIST := -n 2 --dist loadgroup
test: $(VENV)/.test-installed data
	$(PY) -m pytest -q $(XDIST) -m "not slow"

# The slow stage adds TensorFlow/TFDS (the preparation and mock-data tests) and torch (the
# torchvision import test); BOTTLENET_REQUIRE_SLOW_EXTRAS=1: a missing one fails those tests instead
# of skipping them.
$(VENV)/.slow-installed: setup.cfg pyproject.toml | $(VENV)/.test-installed
	$(PY) -m pip install -q -e '.[test,data,torch]'
	touch $@ $(VENV)/.data-installed

test-slow: $(VENV)/.test-installed $(VENV)/.slow-installed data
	BOTTLENET_TEST_XLA_OPT=default BOTTLENET_REQUIRE_SLOW_EXTRAS=1 $(PY) -m pytest -q $(XDIST) -m slow

# The ONNX edge test in an environment of its own: jax2onnx pins an older orbax-checkpoint than the
# main one uses. BOTTLENET_REQUIRE_ONNX=1: a missing extra fails the test instead of skipping it.
ONNX_VENV := .venv-onnx
$(ONNX_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(ONNX_VENV)
	$(ONNX_VENV)/bin/python -m pip install -q --upgrade pip
	$(ONNX_VENV)/bin/python -m pip install -q -e '.[onnx]' pytest
	touch $@

test-onnx: $(ONNX_VENV)/.installed data
	BOTTLENET_REQUIRE_ONNX=1 $(ONNX_VENV)/bin/python -m pytest -q -rs tests/test_onnx_edge.py

# ruff: lint rules and formatting as configured in pyproject.toml (fix: ruff check --fix . && ruff format .)
lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# CI's second stage: every study at toy size (3 steps a run, 1 seed, 2 settings per grid; the ResNet-50
# layout's studies on the ResNet-18 layout) and every benchmark with --smoke: they must keep working;
# their figures are not checked.
STUDIES := frontier bottlenet seeds lightweight bottlenetpp
R18 := --config.overrides=model.depth=18
# Toy-size runs spend most of their time compiling: XLA's CPU optimisation level 1 (as `make test`)
# and one compilation cache for the whole stage (the studies build the same networks many times).
# The studies run in two lanes at once (an XLA compile keeps one core busy; their workdirs are
# their own), about equally long: the frontier's, and the other four.
smoke: export XLA_FLAGS := $(XLA_FLAGS) --xla_backend_optimization_level=1
smoke: export JAX_COMPILATION_CACHE_DIR := $(CURDIR)/workdir/smoke_xla_cache
smoke: $(VENV)/.test-installed $(VENV)/.data-installed $(ONNX_VENV)/.installed data
	rm -rf $(foreach s,$(STUDIES),workdir/$(s)_quick) workdir/gpu_suite_smoke workdir/smoke_xla_cache
	study() { t=$$(date +%s); $(PY) -m bottlenet_jax.experiments "$$@" --config.quick=true >/dev/null || \
	  { echo "smoke: study $$* FAILED"; return 1; }; echo "smoke: study $$* took $$(( $$(date +%s) - t )) s wall"; }; \
	t=$$(date +%s); \
	( study frontier && study lightweight $(R18) --config.split_points=1,4 ) & a=$$!; \
	( study seeds && study bottlenet $(R18) --config.split_points=1,4 && study bottlenetpp $(R18) ) & b=$$!; \
	wait $$a; ra=$$?; wait $$b; rb=$$?; \
	echo "smoke: the studies took $$(( $$(date +%s) - t )) s wall in two lanes"; [ $$ra = 0 ] && [ $$rb = 0 ]
	$(PY) benchmarks/codec_throughput.py --smoke
	$(PY) benchmarks/train_throughput.py --smoke
	$(PY) benchmarks/input_pipeline.py --smoke
	$(PY) benchmarks/serve_load.py --smoke
	$(PY) benchmarks/serve_protocols.py --smoke
	$(ONNX_VENV)/bin/python benchmarks/edge_latency.py --smoke
	t=$$(date +%s); $(PY) benchmarks/gpu_suite.py --smoke --out workdir/gpu_suite_smoke && \
	  echo "smoke: gpu_suite --smoke took $$(( $$(date +%s) - t )) s wall"

# The wheels the device machine's image lacks (Python 3.12, manylinux x86-64, no dependencies resolved
# there: it has no registry) into .whl/ (ignored), for benchmarks/gpu_suite.py; the device command that
# carries them is in benchmarks/README.md ("Open").
GPU_WHEELS := ml-collections==1.1.0 grain==0.2.18 array-record==0.8.6 cloudpickle==3.1.3 portpicker==1.6.0 \
	tqdm==4.70.1 tensorboardx==2.6.5 constriction==0.5.0
gpu-wheels: | $(VENV)/bin/python
	rm -rf .whl && mkdir -p .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --abi cp312 --abi abi3 --abi none --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux_2_28_x86_64 --platform any -d .whl $(GPU_WHEELS)
	@ls .whl && du -sh .whl

# Every study at full size, each resumable (its runs cached in workdir/NAME): results/README.md lists
# what each wrote, with its command, commit, machine and date. 2 CPU cores: the frontier ~11 h (57
# runs), the four others a few hours together. On many machines: README.md, "Studies".
repro: $(VENV)/.test-installed $(VENV)/.data-installed data
	for s in $(STUDIES); do $(PY) -m bottlenet_jax.experiments $$s || exit 1; done

clean:
	rm -rf workdir build *.egg-info
