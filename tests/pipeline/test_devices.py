"""Which device each stage computes on: the rule (patchscaler.model.resolve_device). On a Ray
cluster that declares GPUs: tests/pipeline/test_multinode.py."""
import pytest

from patchscaler.model import NoCUDA, resolve_device


def test_the_rule():
    # in-process: auto follows torch; an explicit device is used as given
    assert resolve_device("auto", None, cuda_available=True) == "cuda"
    assert resolve_device("auto", None, cuda_available=False) == "cpu"
    assert resolve_device("cuda:1", None, cuda_available=True) == "cuda:1"
    # a Ray stage: GPUs reserved -> cuda, none -> cpu whatever was asked (Ray hides GPUs from it)
    assert resolve_device("auto", 1.0, cuda_available=True) == "cuda"
    assert resolve_device("auto", 0.5, cuda_available=True) == "cuda"
    assert resolve_device("auto", 0.0, cuda_available=True) == "cpu"
    assert resolve_device("cuda", 0.0, cuda_available=True) == "cpu"
    # an explicit CPU overrides a GPU stage
    assert resolve_device("cpu", 1.0, cuda_available=False) == "cpu"
    with pytest.raises(NoCUDA, match="reserved 1 GPU"):
        resolve_device("auto", 1.0, cuda_available=False)
    with pytest.raises(NoCUDA, match="--device cuda"):
        resolve_device("cuda", None, cuda_available=False)


def test_precision_auto_follows_the_stage_device():
    from patchscaler.model import Runtime, native_bf16
    assert Runtime(device=resolve_device("auto", 0.0)).precision == ("bf16-dit" if native_bf16("cpu") else "fp32")
