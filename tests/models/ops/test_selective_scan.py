"""Selective scan: the CPU path and the Triton path (under the interpreter) against the sequential reference."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from models.ops import selective_scan as ss
from models.ops.selective_scan import selective_scan, selective_scan_ref

REPO = Path(__file__).resolve().parents[3]
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(bsz=2, dim=8, length=13, n=4, b_kind="g2", c_kind=None, dtype=torch.float64, seed=0,
                use_D=True, use_z=True, use_bias=True):
    """Inputs as a dict; b_kind/c_kind: 'shared' (D, N), 'bnl' (B, N, L) or 'g<G>' (B, G, N, L)."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift).to(dtype)

    def bc(kind):
        if kind == "shared":
            return r(dim, n)
        if kind == "bnl":
            return r(bsz, n, length)
        return r(bsz, int(kind[1:]), n, length)

    return dict(u=r(bsz, dim, length), delta=r(bsz, dim, length, scale=0.5, shift=-1.0),
                A=-(torch.rand(dim, n, generator=gen, dtype=torch.float64) + 0.2).to(dtype),
                B=bc(b_kind), C=bc(c_kind or b_kind), D=r(dim) if use_D else None,
                z=r(bsz, dim, length) if use_z else None, delta_bias=r(dim, scale=0.3) if use_bias else None)


def run_with_grads(fn, inputs, softplus, **kw):
    """out, last state and the gradient of every given input for a fixed non-trivial loss."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items() if v is not None}
    args = {k: leaves.get(k) for k in NAMES}
    out, last = fn(**args, delta_softplus=softplus, return_last_state=True, **kw)
    weight = torch.cos(torch.arange(out.numel(), dtype=torch.float64)).reshape(out.shape)
    (out.double() * weight).sum().backward()
    return out.detach(), last, {k: v.grad for k, v in leaves.items()}


def max_rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


CASES = [  # b_kind, c_kind, use_D, use_z, use_bias, softplus
    ("g2", "g2", True, True, True, True),
    ("g1", "g1", True, False, True, True),
    ("bnl", "bnl", False, False, False, False),
    ("shared", "shared", True, True, False, True),
    ("shared", "g2", False, True, True, False),
    ("g2", "g4", True, True, True, True),  # different group counts for B and C
]


@pytest.mark.parametrize("chunk_steps", [None, 3])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "{}-{}-D{:d}z{:d}b{:d}sp{:d}".format(*c))
def test_cpu_matches_reference_fp64(case, chunk_steps, monkeypatch):
    b_kind, c_kind, use_D, use_z, use_bias, softplus = case
    inputs = make_inputs(b_kind=b_kind, c_kind=c_kind, use_D=use_D, use_z=use_z, use_bias=use_bias)
    if chunk_steps:  # several chunks, the last one partial (L = 13)
        monkeypatch.setattr(ss, "CHUNK_ELEMS", chunk_steps * 2 * 8 * 4)
    ref = run_with_grads(selective_scan_ref, inputs, softplus)
    got = run_with_grads(selective_scan, inputs, softplus, impl="cpu")
    assert got[0].dtype == torch.float64 and got[0].shape == (2, 8, 13)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-10, atol=1e-12)
    assert set(got[2]) == set(ref[2])
    for k in ref[2]:
        assert got[2][k].shape == inputs[k].shape, k
        torch.testing.assert_close(got[2][k], ref[2][k], rtol=1e-9, atol=1e-11, msg=f"grad of {k}")


@pytest.mark.parametrize("b_kind", ["g2", "shared"])
def test_cpu_fp32_close_to_fp64_reference(b_kind, monkeypatch):
    inputs = make_inputs(bsz=2, dim=16, length=40, n=8, b_kind=b_kind)
    monkeypatch.setattr(ss, "CHUNK_ELEMS", 7 * 2 * 16 * 8)
    ref = run_with_grads(selective_scan_ref, inputs, True)
    got = run_with_grads(selective_scan, {k: None if v is None else v.float() for k, v in inputs.items()}, True,
                         impl="cpu")
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    assert max_rel(got[0], ref[0]) < 1e-5 and max_rel(got[1], ref[1]) < 1e-5
    for k in ref[2]:
        assert got[2][k].dtype == torch.float32
        assert max_rel(got[2][k], ref[2][k]) < 1e-5, k


@pytest.mark.parametrize("b_kind", ["g2", "shared", "bnl"])
def test_cpu_gradcheck_fp64(b_kind):
    inputs = make_inputs(bsz=1, dim=4, length=5, n=3, b_kind=b_kind, seed=1)
    names = [k for k in NAMES if inputs[k] is not None]
    leaves = [inputs[k].clone().requires_grad_() for k in names]

    def f(*ts):
        return selective_scan(**dict(zip(names, ts)), delta_softplus=True, impl="cpu")

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_reference_matches_hand_computed_recurrence():
    # one channel, one state, two steps: every formula written out
    u, dl, A, Bv, Cv, Dv, z, bias = 1.5, 0.3, -0.7, (0.4, -1.1), (0.9, 2.0), 0.25, (0.5, -0.2), 0.1
    d0, d1 = math.log1p(math.exp(dl + bias)), math.log1p(math.exp(-dl + bias))
    x0 = d0 * Bv[0] * u
    x1 = math.exp(d1 * A) * x0 + d1 * Bv[1] * (-u)
    silu = [zz / (1 + math.exp(-zz)) for zz in z]
    expect = torch.tensor([(x0 * Cv[0] + u * Dv) * silu[0], (x1 * Cv[1] - u * Dv) * silu[1]], dtype=torch.float64)
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    args = (t(u, -u).view(1, 1, 2), t(dl, -dl).view(1, 1, 2), t(A).view(1, 1), t(*Bv).view(1, 1, 2),
            t(*Cv).view(1, 1, 2), t(Dv), t(*z).view(1, 1, 2), t(bias))
    for impl in ("ref", "cpu"):
        out, last = selective_scan(*args, delta_softplus=True, return_last_state=True, impl=impl)
        torch.testing.assert_close(out.view(2), expect, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(last.view(()), torch.tensor(x1, dtype=torch.float64))


def test_bf16_inputs_accumulate_in_fp32():
    inputs = make_inputs(bsz=1, dim=8, length=200, n=8, b_kind="g2", dtype=torch.bfloat16, seed=3)
    inputs["delta"] = inputs["delta"] - 2.0  # small Δ: long memory, where bf16 accumulation would drift
    got = run_with_grads(selective_scan, inputs, True, impl="cpu")
    ref = run_with_grads(selective_scan_ref, {k: None if v is None else v.float() for k, v in inputs.items()}, True)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    assert max_rel(got[0], ref[0]) < 1e-2  # bf16 rounding of the output only
    assert max_rel(got[1], ref[1]) < 1e-5  # the state never leaves fp32
    for k in ref[2]:
        assert got[2][k].dtype == torch.bfloat16
        assert max_rel(got[2][k], ref[2][k]) < 1e-2, k


def test_auto_on_cpu_is_cpu_path_and_keeps_thread_count():
    inputs = make_inputs(dtype=torch.float32)
    threads = torch.get_num_threads()
    a = selective_scan(**inputs, delta_softplus=True)
    b = selective_scan(**inputs, delta_softplus=True, impl="cpu")
    assert torch.equal(a, b) and torch.get_num_threads() == threads
    assert not isinstance(a, tuple)


def test_shape_and_impl_errors():
    inputs = make_inputs()
    with pytest.raises(ValueError, match=r"B has shape \(2, 3, 4, 13\), expected .*G dividing 8"):
        selective_scan(**{**inputs, "B": torch.zeros(2, 3, 4, 13, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"delta has shape \(2, 8, 12\), expected \(B, D, L\)=\(2, 8, 13\)"):
        selective_scan(**{**inputs, "delta": torch.zeros(2, 8, 12, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"A has shape \(4, 4\), expected \(D, N\) with D=8"):
        selective_scan_ref(**{**inputs, "A": torch.zeros(4, 4, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"delta_bias has shape \(7,\), expected \(8,\)"):
        selective_scan(**{**inputs, "delta_bias": torch.zeros(7, dtype=torch.float64)})
    with pytest.raises(ValueError, match="impl='fast'"):
        selective_scan(**inputs, impl="fast")
    if not ss.mamba_available():
        with pytest.raises(RuntimeError, match="mamba_ssm is not importable"):
            selective_scan(**inputs, impl="mamba")


def test_importing_the_op_does_not_import_triton():
    code = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("ss_alone", {str(REPO / "models/ops/selective_scan.py")!r})
        mod = importlib.util.module_from_spec(spec); sys.modules["ss_alone"] = mod; spec.loader.exec_module(mod)
        assert "triton" not in sys.modules, "triton imported"
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


TRITON_SCRIPT = """
import json, sys, torch
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
from test_selective_scan import make_inputs, run_with_grads, max_rel
from models.ops.selective_scan import selective_scan, selective_scan_ref
res = {}
for name, kw, sp in [("g2_all", dict(b_kind="g2", dim=20), True), ("bnl_plain", dict(b_kind="bnl", use_D=False,
                     use_z=False, use_bias=False), False), ("shared_z", dict(b_kind="shared", use_bias=False), True)]:
    inputs = make_inputs(bsz=1, dim=kw.pop("dim", 4), length=9, n=4, dtype=torch.float32, **kw)
    ref = run_with_grads(selective_scan_ref, {k: None if v is None else v.double() for k, v in inputs.items()}, sp)
    got = run_with_grads(selective_scan, inputs, sp, impl="triton")
    errs = {"out": max_rel(got[0], ref[0]), "last": max_rel(got[1], ref[1])}
    errs.update({"grad_" + k: max_rel(got[2][k], ref[2][k]) for k in ref[2]})
    errs["grads"] = sorted(got[2]) == sorted(ref[2])
    res[name] = errs
print("RESULT " + json.dumps(res))
"""


def test_triton_path_under_interpreter_matches_reference():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", TRITON_SCRIPT, str(REPO), str(Path(__file__).parent)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert set(res) == {"g2_all", "bnl_plain", "shared_z"}
    for case, errs in res.items():
        assert errs.pop("grads") is True, case
        assert len(errs) >= 5
        for k, e in errs.items():
            assert e < 1e-5, (case, k, e)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreter emulates CUDA on CPU")
def test_triton_on_cpu_without_interpreter_raises():
    pytest.importorskip("triton")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        selective_scan(**make_inputs(dtype=torch.float32), impl="triton")
