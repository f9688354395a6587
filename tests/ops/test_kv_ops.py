"""ponder.copy_blocks / write_kv / paged_attention: every backend against the reference.

The reference (ponder.reference.kv_ops) is the definition; it is itself checked against
plain dense causal attention (scaled_dot_product_attention on the gathered K/V). Each
available backend (reference, cpu, triton under the interpreter, cuda where a GPU
exists) must match it for decode and extend batches, grouped-query ratios 1/4/8, head
dims 64/128 (and one that is not a power of two), block sizes 16 and 8, ragged lengths
that cross block boundaries, shuffled block ids, and the three float dtypes. Bad
arguments raise a clear error and leave the caches untouched.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ponder
from ponder.reference import kv_ops as reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Per-dtype tolerance on attention outputs: float32 differs only in summation order and
# exp; 16-bit outputs are rounded (and the Triton kernel rounds probabilities to the
# cache dtype before the second product, as flash attention does).
TOLERANCE = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float16: dict(atol=3e-3, rtol=3e-3),
             torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}
NUM_LAYERS = 2

# (seq_lens, query_lens): decode has one new token per sequence; extend has several on
# top of a cached prefix (a prefill is an extend with an empty prefix). Lengths are
# ragged and cross block boundaries (16 and 8), one sequence has no new token.
BATCHES = {
    "decode": ([1, 16, 17, 40, 33], [1, 1, 1, 1, 1]),
    "extend": ([9, 23, 40, 16, 5], [9, 7, 12, 0, 1]),
    "long": ([70, 100], [6, 2]),  # several 32-position chunks of a GPU's attention tiling
    "prefill": ([37, 21], [37, 21]),  # whole prompts: many query rows meet every block (rows in lanes on CPU)
}


def caches(num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int, dtype, device, seed: int = 0):
    """Random (k_cache, v_cache): [NUM_LAYERS, num_blocks, block_size, num_kv_heads, head_dim]."""
    g = torch.Generator().manual_seed(seed)
    shape = (NUM_LAYERS, num_blocks, block_size, num_kv_heads, head_dim)
    return tuple(torch.randn(shape, generator=g).to(dtype).to(device) for _ in range(2))


def block_tables_for(seq_lens: list[int], block_size: int, num_blocks: int, index_dtype, device, seed: int = 0):
    """Block tables [S, max_blocks] over shuffled, distinct block ids; unused entries are -1."""
    g = torch.Generator().manual_seed(seed)
    needed = [math.ceil(n / block_size) for n in seq_lens]
    ids = torch.randperm(num_blocks, generator=g)[:sum(needed)]
    tables = torch.full((len(seq_lens), max(needed) + 1), -1, dtype=index_dtype)
    start = 0
    for s, n in enumerate(needed):
        tables[s, :n] = ids[start:start + n]
        start += n
    return tables.to(device)


def attention_case(batch: str, group: int, head_dim: int, dtype, device, *, block_size: int = 16,
                   num_kv_heads: int = 2, index_dtype=torch.int32):
    """Arguments of paged_attention (after layer) as a dict, for a batch of BATCHES."""
    seq_lens, query_lens = BATCHES[batch]
    num_blocks = sum(math.ceil(n / block_size) for n in seq_lens) + 3
    k_cache, v_cache = caches(num_blocks, block_size, num_kv_heads, head_dim, dtype, device)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(sum(query_lens), num_kv_heads * group, head_dim, generator=g).to(dtype).to(device)
    return dict(q=q, k_cache=k_cache, v_cache=v_cache, layer=1,
                block_tables=block_tables_for(seq_lens, block_size, num_blocks, index_dtype, device),
                seq_lens=torch.tensor(seq_lens, device=device), query_lens=torch.tensor(query_lens, device=device))


def reference_attention(case: dict, scale: float | None = None) -> torch.Tensor:
    args = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in case.items()}
    head_dim = args["q"].shape[-1]
    return reference.paged_attention(*args.values(), scale if scale is not None else 1.0 / math.sqrt(head_dim))


@pytest.mark.parametrize("batch", ["decode", "extend", "prefill"])
@pytest.mark.parametrize("group,head_dim", [(1, 64), (4, 128), (8, 64)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_paged_attention_matches_reference(backend_device, batch, group, head_dim, dtype):
    backend, device = backend_device
    case = attention_case(batch, group, head_dim, dtype, device, index_dtype=torch.int32 if group != 4 else torch.int64)
    got = ponder.paged_attention(**case, backend=backend)
    assert got.shape == case["q"].shape and got.dtype == dtype and got.device.type == device
    torch.testing.assert_close(got.cpu().float(), reference_attention(case).float(), **TOLERANCE[dtype])


@pytest.mark.parametrize("block_size,head_dim", [(8, 64), (16, 80)])
def test_paged_attention_other_geometries(backend_device, block_size, head_dim):
    """An odd block size, and a head dim that is a multiple of 16 but not a power of two."""
    backend, device = backend_device
    case = attention_case("extend", 4, head_dim, torch.float32, device, block_size=block_size)
    got = ponder.paged_attention(**case, scale=0.3, backend=backend)
    torch.testing.assert_close(got.cpu(), reference_attention(case, scale=0.3), **TOLERANCE[torch.float32])


def test_paged_attention_strided_q_and_out(backend_device):
    """q may be a strided view (a slice of a fused qkv projection); out is written in place."""
    backend, device = backend_device
    case = attention_case("extend", 4, 64, torch.float32, device)
    q = case["q"]
    case["q"] = torch.cat([q, torch.zeros_like(q)], dim=1)[:, :q.shape[1]]  # token stride of two rows
    out = torch.full_like(q, float("nan"))
    got = ponder.paged_attention(**case, out=out, backend=backend)
    assert got is out
    torch.testing.assert_close(out.cpu(), reference_attention(case), **TOLERANCE[torch.float32])


@pytest.mark.parametrize("group", [1, 4])
def test_reference_matches_dense_causal_attention(group):
    """The reference equals scaled_dot_product_attention over each sequence's gathered K/V."""
    case = attention_case("extend", group, 64, torch.float32, "cpu")
    got = reference_attention(case)
    start = 0
    for s, (seq_len, query_len) in enumerate(zip(case["seq_lens"].tolist(), case["query_lens"].tolist())):
        k = reference.gather_kv(case["k_cache"], 1, case["block_tables"][s], seq_len)
        v = reference.gather_kv(case["v_cache"], 1, case["block_tables"][s], seq_len)
        q = case["q"][start:start + query_len]
        # Query i is at position seq_len - query_len + i: a causal mask offset by the prefix.
        mask = torch.ones(query_len, seq_len, dtype=torch.bool).tril(seq_len - query_len)
        want = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                              attn_mask=mask, enable_gqa=True).transpose(0, 1)
        torch.testing.assert_close(got[start:start + query_len], want, atol=1e-5, rtol=1e-5)
        start += query_len


@pytest.mark.parametrize("check_indices", [True, False])
def test_write_then_attend_is_dense_attention(backend_device, check_indices):
    """One model step: write the new tokens' K/V with write_kv, then attend over the blocks."""
    backend, device = backend_device
    block_size, num_kv_heads, head_dim, group = 8, 2, 64, 2
    seq_len, prompt = 21, 13
    k_cache, v_cache = caches(6, block_size, num_kv_heads, head_dim, torch.float32, device)
    table = torch.tensor([[4, 0, 5]], dtype=torch.int32, device=device)
    g = torch.Generator().manual_seed(3)
    k, v = (torch.randn(seq_len, num_kv_heads, head_dim, generator=g).to(device) for _ in range(2))
    q = torch.randn(seq_len - prompt, num_kv_heads * group, head_dim, generator=g).to(device)
    positions = torch.arange(seq_len, device=device)
    slots = table[0].long()[positions // block_size] * block_size + positions % block_size
    ponder.write_kv(k_cache, v_cache, 0, k, v, slots, check_indices=check_indices, backend=backend)
    got = ponder.paged_attention(q, k_cache, v_cache, 0, table, torch.tensor([seq_len], device=device),
                                 torch.tensor([seq_len - prompt], device=device), check_indices=check_indices,
                                 backend=backend)
    mask = torch.ones(seq_len - prompt, seq_len, dtype=torch.bool).tril(prompt)
    want = F.scaled_dot_product_attention(q.cpu().transpose(0, 1), k.cpu().transpose(0, 1), v.cpu().transpose(0, 1),
                                          attn_mask=mask, enable_gqa=True).transpose(0, 1)
    torch.testing.assert_close(got.cpu(), want, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_copy_blocks_matches_reference(backend_device, dtype):
    backend, device = backend_device
    k_cache, v_cache = caches(12, 16, 2, 64, dtype, device)
    want_k, want_v = k_cache.cpu().clone(), v_cache.cpu().clone()
    src = torch.tensor([3, 3, 0, 11], device=device)  # a block may be copied to several places
    dst = torch.tensor([5, 1, 7, 2], device=device)
    ponder.copy_blocks(k_cache, v_cache, src, dst, backend=backend)
    reference.copy_blocks(want_k, want_v, src.cpu(), dst.cpu())
    assert torch.equal(k_cache.cpu(), want_k) and torch.equal(v_cache.cpu(), want_v)
    assert torch.equal(want_k[:, 5], want_k[:, 3]) and torch.equal(want_v[:, 2], want_v[:, 11])
    ponder.copy_blocks(k_cache, v_cache, src[:0], dst[:0], backend=backend)  # nothing to copy
    assert torch.equal(k_cache.cpu(), want_k)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_write_kv_matches_reference(backend_device, dtype):
    backend, device = backend_device
    k_cache, v_cache = caches(4, 8, 4, 32, dtype, device)
    want_k, want_v = k_cache.cpu().clone(), v_cache.cpu().clone()
    g = torch.Generator().manual_seed(2)
    # k is a strided view (a slice of a fused projection), v is contiguous.
    k = torch.randn(6, 8, 32, generator=g).to(dtype).to(device)[:, ::2]
    v = torch.randn(6, 4, 32, generator=g).to(dtype).to(device)
    slots = torch.tensor([31, 0, -1, 9, 17, -1], device=device)  # -1: padding, skipped
    ponder.write_kv(k_cache, v_cache, 1, k, v, slots, backend=backend)
    reference.write_kv(want_k, want_v, 1, k.cpu(), v.cpu(), slots.cpu())
    assert torch.equal(k_cache.cpu(), want_k) and torch.equal(v_cache.cpu(), want_v)
    assert torch.equal(want_k[1, 3, 7], k[0].cpu()) and torch.equal(want_v[1, 2, 1], v[4].cpu())


def _cache_args(device):
    k_cache, v_cache = caches(6, 4, 2, 16, torch.float32, device)
    return k_cache, v_cache


BAD_COPIES = [
    ("src", [6], [1], ValueError, r"src\[0\] = 6 is out of range"),
    ("dst", [0], [-1], ValueError, r"dst\[0\] = -1 is out of range"),
    ("repeated dst", [0, 1], [2, 2], ValueError, "dst holds 2 more than once"),
    ("dst is a src", [0, 1], [1, 2], ValueError, "block 1 is both a src and a dst"),
    ("lengths", [0, 1], [2], ValueError, "same length"),
]


@pytest.mark.parametrize("name,src,dst,error,match", BAD_COPIES, ids=[c[0] for c in BAD_COPIES])
def test_copy_blocks_rejects_bad_ids(backend_device, name, src, dst, error, match):
    backend, device = backend_device
    k_cache, v_cache = _cache_args(device)
    before = k_cache.clone(), v_cache.clone()
    with pytest.raises(error, match=match):
        ponder.copy_blocks(k_cache, v_cache, torch.tensor(src, device=device), torch.tensor(dst, device=device),
                           backend=backend)
    assert torch.equal(k_cache, before[0]) and torch.equal(v_cache, before[1])


def test_copy_blocks_rejects_bad_tensors():
    k_cache, v_cache = _cache_args("cpu")
    ids = torch.tensor([0]), torch.tensor([1])
    with pytest.raises(ValueError, match="v_cache has shape"):
        ponder.copy_blocks(k_cache, v_cache[:, :5].contiguous(), *ids)
    with pytest.raises(TypeError, match="v_cache is torch.float16 but k_cache is torch.float32"):
        ponder.copy_blocks(k_cache, v_cache.half(), *ids)
    with pytest.raises(TypeError, match="src must be torch.int64, got torch.int32"):
        ponder.copy_blocks(k_cache, v_cache, ids[0].int(), ids[1])
    with pytest.raises(ValueError, match="k_cache must be 5-D"):
        ponder.copy_blocks(k_cache[0], v_cache[0], *ids)
    with pytest.raises(ValueError, match="k_cache must be contiguous"):
        ponder.copy_blocks(k_cache.transpose(3, 4), v_cache.transpose(3, 4), *ids)
    with pytest.raises(TypeError, match="k_cache must be a torch.Tensor"):
        ponder.copy_blocks([0.0], v_cache, *ids)


BAD_WRITES = [
    ("slot too large", dict(slots=[0, 24]), ValueError, r"slot_mapping\[1\] = 24 is out of range"),
    ("slot below -1", dict(slots=[-2, 0]), ValueError, r"slot_mapping\[0\] = -2 is out of range"),
    ("repeated slot", dict(slots=[5, 5]), ValueError, "slot_mapping holds 5 more than once"),
    ("layer", dict(layer=2), ValueError, "layer = 2 is out of range"),
    ("layer type", dict(layer=1.0), TypeError, "layer must be an int"),
    ("k shape", dict(k_shape=(2, 2, 8)), ValueError, r"k must have shape \[2, 2, 16\]"),
    ("v dtype", dict(v_dtype=torch.float64), TypeError, "v is torch.float64 but k_cache is torch.float32"),
]


@pytest.mark.parametrize("name,change,error,match", BAD_WRITES, ids=[c[0] for c in BAD_WRITES])
def test_write_kv_rejects_bad_arguments(backend_device, name, change, error, match):
    backend, device = backend_device
    k_cache, v_cache = _cache_args(device)
    before = k_cache.clone(), v_cache.clone()
    k = torch.ones(change.get("k_shape", (2, 2, 16)), device=device)
    v = torch.ones(2, 2, 16, dtype=change.get("v_dtype", torch.float32), device=device)
    slots = torch.tensor(change.get("slots", [0, 1]), device=device)
    with pytest.raises(error, match=match):
        ponder.write_kv(k_cache, v_cache, change.get("layer", 0), k, v, slots, backend=backend)
    assert torch.equal(k_cache, before[0]) and torch.equal(v_cache, before[1])


BAD_ATTENTION = [
    ("query_lens sum", dict(query_lens=[2, 1]), ValueError, r"query_lens sums to 3 but q has 2 tokens"),
    ("negative query_len", dict(query_lens=[3, -1]), ValueError, r"query_lens\[1\] = -1 is out of range"),
    ("seq_len below query_len", dict(seq_lens=[0, 5]), ValueError, r"seq_lens\[0\] = 0 is out of range"),
    ("seq_len past the table", dict(seq_lens=[9, 5]), ValueError, r"seq_lens\[0\] = 9 is out of range"),
    ("block id", dict(table=[[0, 6], [2, 3]]), ValueError, r"block_tables\[0, 1\] = 6 is out of range"),
    ("table dtype", dict(table_dtype=torch.float32), TypeError, "block_tables must be torch.int32 or torch.int64"),
    ("heads", dict(q_heads=3), ValueError, "num_q_heads a positive multiple of num_kv_heads = 2"),
    ("q dtype", dict(q_dtype=torch.float16), TypeError, "q is torch.float16 but k_cache is torch.float32"),
    ("seq_lens shape", dict(seq_lens=[5]), ValueError, r"seq_lens must have shape \[2\]"),
    ("scale", dict(scale=float("nan")), ValueError, "scale must be a finite float"),
    ("out", dict(out_shape=(2, 4, 8)), ValueError, "out must be a contiguous torch.float32 tensor of shape"),
]


@pytest.mark.parametrize("name,change,error,match", BAD_ATTENTION, ids=[c[0] for c in BAD_ATTENTION])
def test_paged_attention_rejects_bad_arguments(backend_device, name, change, error, match):
    backend, device = backend_device
    k_cache, v_cache = _cache_args(device)  # 6 blocks of 4 tokens
    q = torch.ones(2, change.get("q_heads", 4), 16, dtype=change.get("q_dtype", torch.float32), device=device)
    table = torch.tensor(change.get("table", [[0, 1], [2, 3]]), device=device).to(change.get("table_dtype", torch.int32))
    out = torch.empty(change.get("out_shape", (2, 4, 16)), device=device)
    with pytest.raises(error, match=match):
        ponder.paged_attention(q, k_cache, v_cache, 0, table, torch.tensor(change.get("seq_lens", [5, 5]), device=device),
                               torch.tensor(change.get("query_lens", [1, 1]), device=device),
                               scale=change.get("scale"), out=out, backend=backend)


@pytest.mark.skipif(not ponder.ops._backend.has_cpu_kernels(), reason="the extension is not built")
def test_compiled_ops_check_values_themselves():
    """Direct torch.ops.ponder.* calls on CPU tensors are checked in C++ too, before any write."""
    k_cache, v_cache = _cache_args("cpu")
    before = k_cache.clone()
    with pytest.raises(RuntimeError, match="dst holds 2 more than once"):
        torch.ops.ponder.copy_blocks(k_cache, v_cache, torch.tensor([0, 1]), torch.tensor([2, 2]))
    with pytest.raises(RuntimeError, match="block 1 is both a src and a dst"):
        torch.ops.ponder.copy_blocks(k_cache, v_cache, torch.tensor([0, 1]), torch.tensor([1, 3]))
    with pytest.raises(RuntimeError, match="slot_mapping holds 3 more than once"):
        torch.ops.ponder.write_kv(k_cache, v_cache, 0, torch.ones(2, 2, 16), torch.ones(2, 2, 16), torch.tensor([3, 3]))
    with pytest.raises(RuntimeError, match="slot_mapping holds 3 more than once"):  # the C++ check, not Python's
        ponder.write_kv(k_cache, v_cache, 0, torch.ones(2, 2, 16), torch.ones(2, 2, 16), torch.tensor([3, 3]),
                        check_indices=False, backend="cpu")
    assert torch.equal(k_cache, before)
    with pytest.raises(RuntimeError, match=r"block_tables\[1, 0\] = 7 is out of range"):
        torch.ops.ponder.paged_attention(torch.ones(2, 2, 16), k_cache, v_cache, 0, torch.tensor([[0], [7]]),
                                         torch.tensor([1, 1]), torch.tensor([1, 1]), 1.0, torch.empty(2, 2, 16))


def test_opcheck(backend_device):
    """The custom ops' schemas, fake implementations and mutation annotations are consistent."""
    backend, device = backend_device
    if backend == "reference":
        pytest.skip("the reference is plain PyTorch, not a custom op")
    suffix = "_triton" if backend == "triton" else ""
    ops = torch.ops.ponder
    k_cache, v_cache = caches(8, 4, 2, 16, torch.float32, device)
    ids = torch.tensor([1, 4], device=device), torch.tensor([6, 2], device=device)
    torch.library.opcheck(getattr(ops, "copy_blocks" + suffix).default, (k_cache, v_cache, *ids))
    kv = torch.randn(3, 2, 16, device=device)
    torch.library.opcheck(getattr(ops, "write_kv" + suffix).default,
                          (k_cache, v_cache, 1, kv, kv, torch.tensor([5, -1, 0], device=device)))
    case = attention_case("extend", 2, 16, torch.float32, device, block_size=4)
    torch.library.opcheck(getattr(ops, "paged_attention" + suffix).default,
                          (*case.values(), 0.25, torch.empty_like(case["q"])))


def test_torch_compile_fullgraph(backend_device):
    """A whole step (copy-on-write, write K/V, attend) compiles into one graph and matches eager."""
    backend, device = backend_device
    case = attention_case("decode", 4, 64, torch.float32, device)
    g = torch.Generator().manual_seed(4)
    new_k, new_v = (torch.randn(5, 2, 64, generator=g).to(device) for _ in range(2))
    slots = torch.tensor([0, 17, -1, 40, 3], device=device)
    src, dst = torch.tensor([1], device=device), torch.tensor([0], device=device)

    def step(q, k_cache, v_cache, block_tables, seq_lens, query_lens):
        ponder.copy_blocks(k_cache, v_cache, src, dst, backend=backend)
        ponder.write_kv(k_cache, v_cache, 1, new_k, new_v, slots, backend=backend)
        return ponder.paged_attention(q, k_cache, v_cache, 1, block_tables, seq_lens, query_lens, backend=backend)

    names = ("q", "k_cache", "v_cache", "block_tables", "seq_lens", "query_lens")
    eager_args = [case[k].clone() for k in names]
    compiled_args = [case[k].clone() for k in names]
    got = torch.compile(step, backend="eager", fullgraph=True)(*compiled_args)
    torch.testing.assert_close(got, step(*eager_args))
    assert torch.equal(compiled_args[1], eager_args[1]) and torch.equal(compiled_args[2], eager_args[2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_triton_gpu_tiling(monkeypatch, dtype):
    """The Triton kernels with a GPU's launch configuration: several attention chunks per
    query (online softmax across chunks) and several copy tiles per block, which the
    interpreter's large tiles do not reach. (bfloat16 needs the interpreter's float32 dots.)"""
    if "triton" not in ponder.ops._backend.available_backends(torch.device("cpu")) or torch.cuda.is_available():
        pytest.skip("needs Triton's interpreter (on a GPU the other tests use these tiles)")
    from ponder.kernels import kv_ops as kernels

    monkeypatch.setattr(kernels, "_interpreted", lambda tensor: False)
    case = attention_case("long", 4, 64, dtype, "cpu", block_size=8)
    got = ponder.paged_attention(**case, backend="triton")
    torch.testing.assert_close(got.float(), reference_attention(case).float(), **TOLERANCE[dtype])

    k_cache, v_cache = caches(4, 16, 2, 64, dtype, "cpu")  # 2048 elements a block: two tiles of 1024
    want_k, want_v = k_cache.clone(), v_cache.clone()
    ids = torch.tensor([0, 3]), torch.tensor([2, 1])
    ponder.copy_blocks(k_cache, v_cache, *ids, backend="triton")
    reference.copy_blocks(want_k, want_v, *ids)
    assert torch.equal(k_cache, want_k) and torch.equal(v_cache, want_v)
