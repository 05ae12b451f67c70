"""qkd and qat: fake-quantized weights take at most 2^bits values per channel, the reported size follows the bit
width, and at 8 bits the deployed model is a real int8 model the runner's measurements work on."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.quantized as nnq

from kdbench import metrics
from kdbench.engine import RECIPES, fit
from kdbench.errors import KdbenchError
from kdbench.methods import get_method
from kdbench.methods.quantized import OnCpu, fake_quant_bits
from tests.conftest import make_setup

torch.set_num_threads(1)  # 2 threads on a shared 2-core machine spin: one is many times faster

SHAPE = (1, 28, 28)


def _trained(fashion, tiny_stream, name="qkd", **hp):
    method = get_method(name)(make_setup(fashion, tiny_stream), **hp)
    fit(method, tiny_stream, RECIPES["cpu"], epochs=1, progress=False)
    return method


def _levels_per_channel(method) -> dict[str, tuple[int, int]]:
    """For every weight-quantized layer: (its bit width, the most distinct values in one output channel) of the
    weights the deployed fake-quantized model computes with."""
    out = {}
    model = method.fake_quantized()  # observers off: quantizing reads the learned scales, changes nothing
    for name, m in model.named_modules():
        fq = getattr(m, "weight_fake_quant", None)
        if isinstance(fq, torch.nn.Module):
            w = fq(m.weight.detach()).flatten(1)
            out[name] = (fake_quant_bits(fq), max(len(torch.unique(row)) for row in w))
    return out


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bit_weights_take_at_most_two_to_the_bits_values(bits, fashion, tiny_stream):
    method = _trained(fashion, tiny_stream, bits=bits)
    levels = _levels_per_channel(method)
    assert len(levels) >= 5
    inner = {n: v for n, v in levels.items() if v[0] == bits}
    ends = {n: v for n, v in levels.items() if v[0] == 8}
    assert len(ends) == 2 and "fc" in ends  # first conv and classifier at 8 bits, LSQ's convention
    assert len(inner) == len(levels) - 2
    for name, (_, distinct) in inner.items():
        assert 2 <= distinct <= 2**bits, (name, distinct)
    assert max(d for _, d in ends.values()) > 2**bits  # the 8-bit layers really use more levels

    uniform = _trained(fashion, tiny_stream, bits=bits, ends_bits=bits)
    assert all(b == bits and d <= 2**bits for b, d in _levels_per_channel(uniform).values())


def test_size_follows_the_bit_width(fashion, tiny_stream):
    sizes = {}
    for bits in (2, 4, 8):
        method = get_method("qat")(
            make_setup(fashion, tiny_stream), bits=bits, ends_bits=bits if bits < 8 else 8
        )
        sizes[bits] = method.deployable_size_bytes()
    modules = method.quantized_modules()
    fp32_weight_bytes = 4 * sum(m.weight.numel() for m in modules)
    others = sum(p.numel() for p in method.student.parameters()) - sum(m.weight.numel() for m in modules)
    # weights at b/32 of their float32 bytes; the rest (scales, folded biases) is a small overhead
    for bits, size in sizes.items():
        weights_only = fp32_weight_bytes * bits / 32
        assert weights_only < size < weights_only + 4 * others + 2000, (bits, size, weights_only)
    assert sizes[2] < sizes[4] < sizes[8] < metrics.count_parameters(method.student) * 4
    assert sizes[4] == pytest.approx(fp32_weight_bytes / 8, rel=0.15)


def test_int8_deployable_is_quantized_and_measurable_on_cpu(fashion, tiny_stream):
    method = _trained(fashion, tiny_stream, bits=8)
    model = method.deployable()
    assert not isinstance(model, OnCpu)  # a CPU run: the int8 model itself
    convs = [m for m in model.modules() if isinstance(m, nnq.Conv2d)]
    assert convs and any(isinstance(m, nnq.Linear) for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.buffers())

    # the runner's measurements
    logits, labels = metrics.predict(
        model, tiny_stream.subset(torch.ones(tiny_stream.num_samples, dtype=torch.bool))
    )
    assert logits.shape == (tiny_stream.num_samples, 10) and torch.isfinite(logits).all()
    assert metrics.latency_ms(model, SHAPE, 4, repeats=2, warmup=1) > 0
    assert metrics.flops_per_image(model, SHAPE) >= 0  # 0: the counter does not see quantized:: kernels
    assert metrics.count_parameters(model) == 0  # packed weights: hence "quantized_weights" in the extras

    extras = method.record_extras()
    assert extras["quant_stack"].startswith("torch.ao FX") and extras["bits"] == 8 and extras["int8_kernels"]
    assert extras["quantized_weights"] == sum(m.weight.numel() for m in method.quantized_modules()) > 1000
    assert extras["flops_per_image"] > 0

    # the int8 model computes what the fake-quantized one simulates (not exactly: torch's x86 recipe simulates
    # activations in 7 bits, reduce_range, while the int8 kernels keep 8, so the int8 model clips less)
    x = next(tiny_stream.epoch(0)).x
    with torch.no_grad():
        fake = method.fake_quantized()(x)
        real = model(x)
    step = next(
        m for m in model.modules() if isinstance(m, nnq.Linear)
    ).scale  # the logits' quantization step
    steps = (fake - real).abs() / step  # rounding differences add up over the layers, a few steps at most
    assert steps.max() <= 4.01 and steps.mean() <= 1.0, (steps.max(), steps.mean())
    assert method.extra_parameters() == 0


def test_oncpu_wrapper_returns_to_the_input_device():
    model = OnCpu(torch.nn.Linear(3, 2))
    x = torch.randn(4, 3)
    assert torch.equal(model(x), model.model(x))


def test_fake_quantized_deployable_does_not_learn_from_evaluation(fashion, tiny_stream):
    method = _trained(fashion, tiny_stream, name="qat", bits=4)
    model = method.deployable()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics.predict(model, tiny_stream)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert method.extra_parameters() == 0  # the cached deployed copy is not a submodule counted twice
    assert [name for name, _ in method.named_children()] == ["student"]
    assert method.record_extras()["bits"] == 4 and not method.record_extras()["int8_kernels"]


def test_bad_bit_width_names_the_choices(fashion, tiny_stream):
    with pytest.raises(KdbenchError, match="2, 3, 4"):
        get_method("qkd")(make_setup(fashion, tiny_stream), bits=1)
