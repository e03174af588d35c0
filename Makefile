# PixPerfect: `make demo` and `make test` work on a fresh machine (they create .venv).
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIX     := $(VENV)/bin/pixperfect
STAMP   := $(VENV)/.installed-stamp
DEMO    := runs/demo
CORPUS  := $(DEMO)/corpus/{00000..00001}.tar
CORPUS_BUILD := --kind clean --size 128 --crops-per-image 2 --format avif --num-tasks 2

.PHONY: install demo test lint bench gpu-check reference generalisation clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The main job on the embedded default: scikit-image's photos, CPU, a few minutes.
demo: $(STAMP)
	$(PIX) shards build --images skimage --config configs/demo.yaml --out $(DEMO)/shards \
		--crops-per-image 200 --shard-size 100 \
		|| { echo "(an older demo's files are in $(DEMO)/: make clean-demo, then make demo)"; exit 1; }
	$(PIX) shards verify $(DEMO)/shards
	@# The same shards by URL, as a cluster reads them from a server or a bucket (docs/reliability.md).
	$(PIX) shards verify --no-decode file://$(abspath $(DEMO))/shards/manifest.json
	$(PIX) preflight --config configs/demo.yaml
	$(PIX) train --config configs/demo.yaml
	$(PIX) evaluate --config configs/demo.yaml --ckpt $(DEMO)/checkpoints/last.ckpt \
		--pretrained --out $(DEMO)/eval.json --save-examples 2
	$(PIX) export $(DEMO)/checkpoints/last.ckpt $(DEMO)/release
	$(PIX) refine --model $(DEMO)/release \
		--image $(DEMO)/examples/chelsea_0_composite.png \
		--mask $(DEMO)/examples/chelsea_0_mask.png --out $(DEMO)/examples/chelsea_0_refined.png
	$(PIX) refine --image $(DEMO)/examples/chelsea_0_composite.png \
		--mask $(DEMO)/examples/chelsea_0_mask.png --out $(DEMO)/examples/chelsea_0_reference.png
	@# An image corpus as img2dataset stores it, read where it is (docs/shards.md): planned,
	@# built by two array tasks into compact AVIF shards, verified, and trained from directly.
	$(PY) scripts/make_corpus.py $(DEMO)/corpus
	$(PIX) shards build --images '$(CORPUS)' --out $(DEMO)/corpus-shards $(CORPUS_BUILD) --dry-run
	$(PIX) shards build --images '$(CORPUS)' --out $(DEMO)/corpus-shards $(CORPUS_BUILD) --task-index 0
	$(PIX) shards build --images '$(CORPUS)' --out $(DEMO)/corpus-shards $(CORPUS_BUILD) --task-index 1
	$(PIX) shards verify --workers 2 $(DEMO)/corpus-shards
	$(PIX) train --config configs/demo.yaml data.source=corpus data.corpus='$(CORPUS)' \
		run.name=demo_corpus trainer.max_steps=20
	@echo
	@echo "demo finished: everything is under $(DEMO)/"
	@echo "  shards       $(DEMO)/shards/         (artifact shards + manifest.json)"
	@echo "  checkpoints  $(DEMO)/checkpoints/   (resume: run make demo again with more steps)"
	@echo "  sheet        $(DEMO)/contact_sheet.png"
	@echo "  metrics      $(DEMO)/eval.json, eval.md, eval.csv (methods x metrics; refiner:"
	@echo "               the demo's model, pretrained: the shipped reference refiner)"
	@echo "  cases        $(DEMO)/cases.png      (worst and best cases, side by side)"
	@echo "  release      $(DEMO)/release/        (model.safetensors + config.yaml: refine --model)"
	@echo "  examples     $(DEMO)/examples/       (composite, mask, target, refined by each model;"
	@echo "               chelsea_0_reference.png: refine without --model, the shipped refiner)"
	@echo "  corpus       $(DEMO)/corpus/         (img2dataset layout, with a truncated JPEG, a tiny"
	@echo "               image, a PNG and a failed download), $(DEMO)/corpus-shards/ (avif),"
	@echo "               runs/demo_corpus/ (20 steps trained straight from the corpus)"
	@echo "  tensorboard  $(VENV)/bin/tensorboard --logdir $(DEMO)/tb"

# Speed and size benchmarks: each prints a table (minutes on a 2-core CPU).
bench: $(STAMP)
	$(PY) benchmarks/bench_simulation.py
	$(PY) benchmarks/bench_shards.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_inference.py

# The paper's step, simulation, precompute, DDP and syncs on this machine's GPU, as one
# table (on a CPU: the same rows at a tiny scale, GPU rows skipped). Options: --help.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

# The shipped reference refiner (src/pixperfect/weights/pixperfect-unet-cpu-v2, package
# data): shards of the 315 photos of ../shared/data/photos/train, about 72 min of training
# on the CPU, the Kodak table, the export with its provenance. Resumable: run it again
# after an interruption.
reference: $(STAMP)
	$(PY) scripts/reference_model.py

# The shipped refiner on artifacts and photos it did not train on, as one table.
generalisation: $(STAMP)
	$(PY) benchmarks/generalisation.py

clean-demo:
	rm -rf $(DEMO)
