"""Sparse window attention and sparse 3×3×3 convolution against plain dense references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.sparse import (
    KERNEL_OFFSETS,
    SparseContext,
    SparseTransformerBlock,
    WindowPartition,
    attention_backend,
    sinusoidal_position_encoding,
    sparse_conv3d,
    window_attention,
)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def clustered_coords(seed: int, extent: int = 28, n: int = 700) -> torch.Tensor:
    """Unique block coordinates with very uneven window populations: dense clusters + sparse dust,
    in random order (not sorted), so windows hold from 1 to a few hundred tokens."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randint(3, extent - 3, (3, 3), generator=g).float()
    pts = [torch.randn(n // 3, 3, generator=g) * s + c for c, s in zip(centres, (1.5, 3.0, 5.0))]
    pts.append(torch.rand(40, 3, generator=g) * extent)
    c = torch.cat(pts).round().long().clamp(0, extent - 1)
    c = torch.unique(c, dim=0)
    return c[torch.randperm(c.shape[0], generator=g)]


def naive_window_attention(q, k, v, coords, window, shift):
    """Loop over windows, softmax(QKᵀ/√d)V in each: the definition, nothing clever."""
    out = torch.zeros_like(q)
    wid = torch.div(coords + shift, window, rounding_mode="floor")
    for w in torch.unique(wid, dim=0):
        idx = torch.nonzero((wid == w).all(dim=1)).flatten()
        qq, kk, vv = (t[idx].transpose(0, 1) for t in (q, k, v))  # [H, n, D]
        att = torch.softmax(qq @ kk.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
        out[idx] = (att @ vv).transpose(0, 1)
    return out


@pytest.mark.parametrize("shift", [0, 4])
@pytest.mark.parametrize("max_pairs", [1 << 22, 3000])
def test_window_attention_matches_naive(shift, max_pairs):
    coords = clustered_coords(1)
    L = coords.shape[0]
    part = WindowPartition.build(coords, 8, shift, max_pairs=max_pairs)
    pops = part.counts
    assert pops.sum() == L and pops.min() == 1 and pops.max() > 64, "want uneven windows"
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(L, 4, 16, generator=g) for _ in range(3))
    got = window_attention(q, k, v, part, backend="padded")
    ref = naive_window_attention(q, k, v, coords, 8, shift)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    if max_pairs < 4096:
        assert len(part.batches) > 10  # the batching/un-permutation path really was exercised


def test_window_attention_gradients_match_naive():
    coords = clustered_coords(3, n=300)
    L = coords.shape[0]
    part = WindowPartition.build(coords, 8, 4, max_pairs=2000)
    g = torch.Generator().manual_seed(4)
    base = [torch.randn(L, 2, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    w = torch.randn(L, 2, 8, generator=g, dtype=torch.float64)
    a = [t.clone().requires_grad_() for t in base]
    b = [t.clone().requires_grad_() for t in base]
    (window_attention(*a, part, backend="padded") * w).sum().backward()
    (naive_window_attention(*b, coords, 8, 4) * w).sum().backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, atol=1e-10, rtol=1e-8)


def test_shift_changes_windows_and_partition_is_exact():
    coords = clustered_coords(5)
    p0 = WindowPartition.build(coords, 8, 0)
    p4 = WindowPartition.build(coords, 8, 4)
    for p, s in ((p0, 0), (p4, 4)):
        w = torch.div(coords[p.order] + s, 8, rounding_mode="floor")
        starts = p.cu_seqlens[:-1].long()
        ends = p.cu_seqlens[1:].long()
        # every token of a window shares its window coordinate, consecutive windows differ
        first = w[starts]
        assert torch.equal(torch.repeat_interleave(first, ends - starts, dim=0), w)
        assert p.num_windows == torch.unique(w, dim=0).shape[0]
        assert torch.equal(p.order[p.inverse_order], torch.arange(coords.shape[0]))
    assert not torch.equal(p0.counts.sort().values, p4.counts.sort().values)


def test_padded_work_grows_with_window_population_not_L_squared():
    # A sphere shell of ~10k blocks: padded attention must cost O(sum of pop²), never O(L²).
    s = 64
    g = torch.stack(torch.meshgrid(*[torch.arange(s)] * 3, indexing="ij"), -1).reshape(-1, 3)
    r = (g.float() + 0.5 - s / 2).norm(dim=1)
    coords = g[(r - 0.4 * s).abs() < 0.9]
    L = coords.shape[0]
    part = WindowPartition.build(coords, 8, 4)
    pairs = sum(tok.shape[0] * tok.shape[1] ** 2 for tok, _, _ in part.batches)
    exact = int((part.counts.double() ** 2).sum())
    assert part.max_population <= 512
    assert pairs <= 4 * exact  # padding to the bucket's max at most doubles a window's side
    assert pairs < L * 512 and pairs < L * L / 20


def dense_conv_reference(x, weight, bias, coords):
    """Scatter tokens into a small dense grid, run conv3d with padding 1, read back the sites."""
    ext = int(coords.max()) + 1
    dense = x.new_zeros(1, x.shape[1], ext, ext, ext)
    dense[0, :, coords[:, 0], coords[:, 1], coords[:, 2]] = x.t()
    # weight[k, ci, co] with offset k = (dx+1)*9 + (dy+1)*3 + (dz+1)  ->  w[co, ci, dx+1, dy+1, dz+1]
    w = weight.permute(2, 1, 0).reshape(weight.shape[2], weight.shape[1], 3, 3, 3)
    y = F.conv3d(dense, w, bias, padding=1)
    return y[0, :, coords[:, 0], coords[:, 1], coords[:, 2]].t()


def test_sparse_conv_matches_dense_conv3d_forward_and_backward():
    coords = clustered_coords(7, extent=20, n=500)
    L = coords.shape[0]
    g = torch.Generator().manual_seed(8)
    x = torch.randn(L, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(27, 6, 5, generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    upstream = torch.randn(L, 5, generator=g, dtype=torch.float64)
    ctx = SparseContext(coords)

    a = [t.clone().requires_grad_() for t in (x, weight, bias)]
    b = [t.clone().requires_grad_() for t in (x, weight, bias)]
    got = sparse_conv3d(*a, ctx.neighbours)
    ref = dense_conv_reference(*b, coords)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)
    (got * upstream).sum().backward()
    (ref * upstream).sum().backward()
    for p, q in zip(a, b):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-10, rtol=1e-10)


def test_sparse_conv_gradcheck():
    coords = clustered_coords(9, extent=8, n=60)[:25]
    ctx = SparseContext(coords)
    x = torch.randn(coords.shape[0], 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(27, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: sparse_conv3d(a, b, None, ctx.neighbours), (x, w))


def test_neighbour_map_is_symmetric_and_correct():
    coords = clustered_coords(11, extent=16, n=300)
    L = coords.shape[0]
    table = SparseContext(coords).neighbours.table
    assert table.shape == (L, 27)
    assert torch.equal(table[:, 13], torch.arange(L))
    lookup = {tuple(c): i for i, c in enumerate(coords.tolist())}
    for k in range(27):
        expect = [lookup.get(tuple(c), L) for c in (coords + KERNEL_OFFSETS[k]).tolist()]
        assert table[:, k].tolist() == expect
        # i sees j at +o exactly when j sees i at -o
        has = table[:, k] < L
        assert torch.equal(table[table[has, k], 26 - k], torch.nonzero(has).flatten())


def test_context_builds_structures_once():
    coords = clustered_coords(13, n=200)
    ctx = SparseContext(coords)
    assert ctx.windows(8, 4) is ctx.windows(8, 4)
    assert ctx.windows(8, 0) is not ctx.windows(8, 4)
    assert ctx.neighbours is ctx.neighbours
    block = SparseTransformerBlock(32, 4, 8, 4)
    x = torch.randn(coords.shape[0], 32)
    block(block(x, ctx), ctx)
    assert set(ctx._windows) == {(8, 0), (8, 4)}


def test_block_is_permutation_equivariant():
    """Token order is arbitrary: permuting blocks and coords together permutes the output."""
    coords = clustered_coords(15, n=200)
    block = SparseTransformerBlock(32, 4, 8, 4).eval()
    x = torch.randn(coords.shape[0], 32)
    perm = torch.randperm(coords.shape[0])
    y = block(x, SparseContext(coords))
    yp = block(x[perm], SparseContext(coords[perm]))
    torch.testing.assert_close(yp, y[perm], atol=1e-5, rtol=1e-5)


def test_context_rejects_bad_coords():
    with pytest.raises(ValueError, match="duplicate"):
        SparseContext(torch.tensor([[1, 2, 3], [0, 0, 0], [1, 2, 3]]))
    with pytest.raises(ValueError, match=r"\[L, 3\]"):
        SparseContext(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="lie in"):
        SparseContext(torch.tensor([[-1, 0, 0]]))


def test_position_encoding_distinguishes_blocks():
    coords = torch.stack(torch.meshgrid(*[torch.arange(0, 256, 17)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pe = sinusoidal_position_encoding(coords, 256)
    assert pe.shape == (coords.shape[0], 256) and torch.isfinite(pe).all()
    d = torch.cdist(pe, pe) + torch.eye(pe.shape[0]) * 1e3
    assert d.min() > 0.1
    assert sinusoidal_position_encoding(coords[:3], 32).shape == (3, 32)


def test_varlen_probe_falls_back_cleanly():
    """Where the flash varlen kernel cannot run (here: CPU), the probe warns and says no."""
    from model.sparse import _varlen_works

    _varlen_works.cache_clear()
    with pytest.warns(UserWarning, match="using padded SDPA"):
        assert _varlen_works("cpu", torch.float16, 16) is False


def test_attention_backend_names():
    assert "padded SDPA" in attention_backend("cpu")
    assert "padded SDPA" in attention_backend(torch.device("cpu"), torch.float16)
