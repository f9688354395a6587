"""Triton backend of ``ponder.copy_blocks``, ``ponder.write_kv`` and ``ponder.paged_attention``.

The layout and semantics are those of :mod:`ponder.reference.kv_ops`. Three kernels:

1. ``_copy_blocks_kernel``: one program per (block pair, layer) copies the block's
   ``block_size * num_kv_heads * head_dim`` elements of K and of V.
2. ``_write_kv_kernel``: one program per new token copies its [num_kv_heads, head_dim]
   keys and values (any strides) into its slot; slot -1 is skipped.
3. ``_paged_attention_kernel``: one program per (query token, KV head) takes the
   ``group = num_q_heads / num_kv_heads`` query heads that share the KV head as the rows
   of one tile (padded to 16 rows, the smallest ``tl.dot``), walks the visible keys in
   chunks of ``BLOCK_N`` positions, each position's slot looked up in the block table,
   and keeps an online softmax in float32 (running max, running sum, rescaled
   accumulator). Probabilities are rounded to the cache dtype for the second product,
   as flash attention does: outputs of 16-bit caches are within that rounding of the
   reference (float32 caches compute with IEEE float32 products).

Index values are not checked here (the public ops check CPU tensors; a GPU tensor would
have to be read back). Out-of-range block ids and slots are skipped: copies and writes
to them do not happen and attention masks the keys they would hold.
"""

import torch
import triton
import triton.language as tl

# Launch configuration on a GPU. Attention: 32 positions a chunk over 8 warps keeps the
# [16, 128] float32 tiles and their 64-bit address tiles in registers (ptxas reports no
# spills for head_dim 128 in every dtype; 64 positions over 4 warps spilled).
GPU_COPY_TILE = 1024
GPU_BLOCK_N = 32
NUM_WARPS = 4
ATTENTION_WARPS = 8
# The interpreter runs every Triton operation as one numpy call at a fixed Python cost
# of about 0.1 ms: few, large tiles are fastest there.
_INTERPRETER_TILE = 1 << 16
_INTERPRETER_BLOCK_N = 256
# The row tile of the attention kernel: the query heads of one KV head, padded.
_MIN_DOT_ROWS = 16


def _interpreted(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cpu"


@triton.jit
def _copy_blocks_kernel(k_ptr, v_ptr, src_ptr, dst_ptr, num_blocks, block_elems, layer_elems, TILE: tl.constexpr):
    """Program (pair, layer): block ``src[pair]`` -> ``dst[pair]`` of ``layer`` in K and V."""
    pair = tl.program_id(0)
    layer = tl.program_id(1).to(tl.int64)
    src = tl.load(src_ptr + pair)
    dst = tl.load(dst_ptr + pair)
    # An out-of-range id copies nothing. (Scalar conditions go into a bound rather than
    # into `&` with a block: the 3.9 interpreter turns such a mask into integers.)
    valid = (src >= 0) & (src < num_blocks) & (dst >= 0) & (dst < num_blocks)
    end = tl.where(valid, block_elems, 0)
    src_base = layer * layer_elems + src * block_elems
    dst_base = layer * layer_elems + dst * block_elems
    for start in range(0, block_elems, TILE):
        offsets = start + tl.arange(0, TILE)
        mask = offsets < end
        tl.store(k_ptr + dst_base + offsets, tl.load(k_ptr + src_base + offsets, mask=mask), mask=mask)
        tl.store(v_ptr + dst_base + offsets, tl.load(v_ptr + src_base + offsets, mask=mask), mask=mask)


@triton.jit
def _write_kv_kernel(k_cache_ptr, v_cache_ptr, k_ptr, v_ptr, slot_ptr, layer_offset, num_slots,
                     k_stride_t, k_stride_h, k_stride_d, v_stride_t, v_stride_h, v_stride_d, num_kv_heads, head_dim,
                     HEADS: tl.constexpr, DIM: tl.constexpr):
    """Program t: ``k[t]``, ``v[t]`` [num_kv_heads, head_dim] -> flat slot ``slot[t]`` of the layer."""
    t = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + t)
    heads = tl.arange(0, HEADS)[:, None]
    dims = tl.arange(0, DIM)[None, :]
    valid_heads = tl.where((slot >= 0) & (slot < num_slots), num_kv_heads, 0)  # padding writes nothing
    mask = (heads < valid_heads) & (dims < head_dim)
    dst = layer_offset + slot * (num_kv_heads * head_dim) + heads * head_dim + dims
    k = tl.load(k_ptr + t * k_stride_t + heads * k_stride_h + dims * k_stride_d, mask=mask)
    v = tl.load(v_ptr + t * v_stride_t + heads * v_stride_h + dims * v_stride_d, mask=mask)
    tl.store(k_cache_ptr + dst, k, mask=mask)
    tl.store(v_cache_ptr + dst, v, mask=mask)


@triton.jit
def _paged_attention_kernel(q_ptr, k_ptr, v_ptr, out_ptr, table_ptr, seq_lens_ptr, query_lens_ptr, query_start_ptr,
                            token_seq_ptr, q_stride_t, q_stride_h, out_stride_t, out_stride_h, table_stride,
                            layer_offset, num_blocks, block_size, num_kv_heads, group, head_dim, scale,
                            GROUP: tl.constexpr, DIM: tl.constexpr, BLOCK_N: tl.constexpr, DOT_FP32: tl.constexpr):
    """Program (t, kv_head): output rows of query token t for the query heads of kv_head.

    ``DOT_FP32`` runs both products on float32 operands: for bfloat16 under the interpreter,
    whose ``tl.dot`` multiplies bfloat16 bit patterns as integers.
    """
    t = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1)
    seq = tl.load(token_seq_ptr + t)
    seq_len = tl.load(seq_lens_ptr + seq)
    query_pos = seq_len - tl.load(query_lens_ptr + seq) + (t - tl.load(query_start_ptr + seq))

    rows = tl.arange(0, GROUP)
    dims = tl.arange(0, DIM)
    heads = kv_head * group + rows
    q_mask = (rows < group)[:, None] & (dims < head_dim)[None, :]
    q = tl.load(q_ptr + t * q_stride_t + heads[:, None] * q_stride_h + dims[None, :], mask=q_mask, other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)

    token_stride = num_kv_heads * head_dim
    row_max = tl.full((GROUP,), float("-inf"), tl.float32)
    row_sum = tl.zeros((GROUP,), tl.float32)
    acc = tl.zeros((GROUP, DIM), tl.float32)
    for start in range(0, query_pos + 1, BLOCK_N):
        positions = start + tl.arange(0, BLOCK_N)
        visible = positions <= query_pos
        block = tl.load(table_ptr + seq * table_stride + positions // block_size, mask=visible, other=0).to(tl.int64)
        visible &= (block >= 0) & (block < num_blocks)
        slot = block * block_size + positions % block_size
        kv_offsets = (layer_offset + slot * token_stride + kv_head * head_dim)[:, None] + dims[None, :]
        kv_mask = visible[:, None] & (dims < head_dim)[None, :]
        k = tl.load(k_ptr + kv_offsets, mask=kv_mask, other=0.0).to(q.dtype)
        scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # [GROUP, BLOCK_N] float32
        scores = tl.where(visible[None, :], scores, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, axis=1))
        rescale = tl.exp(row_max - new_max)  # 0 on the first chunk (row_max = -inf)
        probs = tl.exp(scores - new_max[:, None])
        row_sum = row_sum * rescale + tl.sum(probs, axis=1)
        v = tl.load(v_ptr + kv_offsets, mask=kv_mask, other=0.0).to(q.dtype)
        acc = acc * rescale[:, None] + tl.dot(probs.to(v.dtype), v, input_precision="ieee")
        row_max = new_max
    out = acc / row_sum[:, None]
    tl.store(out_ptr + t * out_stride_t + heads[:, None] * out_stride_h + dims[None, :],
             out.to(out_ptr.dtype.element_ty), mask=q_mask)


def copy_blocks(k_cache: torch.Tensor, v_cache: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    """Copy block ``src[i]`` to ``dst[i]`` in every layer of both caches (contiguous, validated); int64 [N] ids."""
    num_layers, num_blocks = k_cache.shape[:2]
    if src.numel() == 0:
        return
    block_elems = k_cache[0, 0].numel()
    tile = min(triton.next_power_of_2(block_elems), _INTERPRETER_TILE) if _interpreted(k_cache) else GPU_COPY_TILE
    with torch.cuda.device_of(k_cache):
        _copy_blocks_kernel[(src.shape[0], num_layers)](
            k_cache, v_cache, src.contiguous(), dst.contiguous(), num_blocks, block_elems, k_cache[0].numel(),
            TILE=tile, num_warps=NUM_WARPS)


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, layer: int, k: torch.Tensor, v: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Write ``k``, ``v`` [T, num_kv_heads, head_dim] (any strides) into flat slots ``slot_mapping`` int64 [T]."""
    num_tokens = slot_mapping.shape[0]
    if num_tokens == 0:
        return
    _, num_blocks, block_size, num_kv_heads, head_dim = k_cache.shape
    with torch.cuda.device_of(k_cache):
        _write_kv_kernel[(num_tokens,)](
            k_cache, v_cache, k, v, slot_mapping.contiguous(), layer * k_cache[0].numel(), num_blocks * block_size,
            *k.stride(), *v.stride(), num_kv_heads, head_dim,
            HEADS=triton.next_power_of_2(num_kv_heads), DIM=triton.next_power_of_2(head_dim), num_warps=NUM_WARPS)


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, layer: int,
                    block_tables: torch.Tensor, seq_lens: torch.Tensor, query_lens: torch.Tensor, scale: float,
                    out: torch.Tensor) -> None:
    """Causal attention over block tables into ``out`` (contiguous, q's shape and dtype).

    ``q`` [T_total, num_q_heads, head_dim] (head_dim contiguous, else copied);
    ``block_tables`` int32/int64 [S, max_blocks]; ``seq_lens``, ``query_lens`` int64 [S].
    """
    num_tokens, num_q_heads, head_dim = q.shape
    if num_tokens == 0:
        return
    _, num_blocks, block_size, num_kv_heads, _ = k_cache.shape
    group = num_q_heads // num_kv_heads
    if q.stride(2) != 1:
        q = q.contiguous()
    block_tables = block_tables.contiguous()
    # Each token's sequence and each sequence's first row, computed on the device (no sync).
    query_end = torch.cumsum(query_lens, 0)
    query_start = query_end - query_lens
    token_seq = torch.searchsorted(query_end, torch.arange(num_tokens, device=q.device), right=True)
    block_n = _INTERPRETER_BLOCK_N if _interpreted(q) else GPU_BLOCK_N
    with torch.cuda.device_of(q):
        _paged_attention_kernel[(num_tokens, num_kv_heads)](
            q, k_cache, v_cache, out, block_tables, seq_lens.contiguous(), query_lens.contiguous(), query_start,
            token_seq, q.stride(0), q.stride(1), out.stride(0), out.stride(1), block_tables.stride(0),
            layer * k_cache[0].numel(), num_blocks, block_size, num_kv_heads, group, head_dim, scale,
            GROUP=max(_MIN_DOT_ROWS, triton.next_power_of_2(group)), DIM=max(16, triton.next_power_of_2(head_dim)),
            BLOCK_N=block_n, DOT_FP32=_interpreted(q) and q.dtype == torch.bfloat16, num_warps=ATTENTION_WARPS)


# Ahead-of-time compilation (.ci/triton_aot.py), outside the interpreter: every kernel in
# the launch configuration a GPU gets, for each cache dtype (and, for attention, head
# dims 64 and 128 with up to 16 query heads per KV head). Integer arguments are compiled
# as i32 except the element offsets that can pass 2^31 in a large cache.
_POINTER_NAMES = ("k_ptr", "v_ptr", "q_ptr", "out_ptr", "k_cache_ptr", "v_cache_ptr")
_INDEX_POINTERS = {"src_ptr": "*i64", "dst_ptr": "*i64", "slot_ptr": "*i64", "table_ptr": "*i32",
                   "seq_lens_ptr": "*i64", "query_lens_ptr": "*i64", "query_start_ptr": "*i64",
                   "token_seq_ptr": "*i64"}
_INT64_ARGS = ("layer_elems", "layer_offset")


def aot_variants() -> dict:
    """``{kernel: [dict(signature=..., constexprs=..., num_warps=...), ...]}`` for ``triton.compile``."""
    def signature(kernel, element_type):
        def kind(param):
            if param.is_constexpr:
                return "constexpr"
            if param.name in _POINTER_NAMES:
                return element_type
            if param.name == "scale":
                return "fp32"
            return _INDEX_POINTERS.get(param.name, "i64" if param.name in _INT64_ARGS else "i32")
        return {param.name: kind(param) for param in kernel.params}

    def variants(kernel, constexprs_list, num_warps=NUM_WARPS):
        return [dict(signature=signature(kernel, element_type), constexprs=constexprs, num_warps=num_warps)
                for element_type in ("*fp32", "*fp16", "*bf16") for constexprs in constexprs_list]

    return {
        _copy_blocks_kernel: variants(_copy_blocks_kernel, [{"TILE": GPU_COPY_TILE}]),
        _write_kv_kernel: variants(_write_kv_kernel, [{"HEADS": 8, "DIM": 128}]),
        _paged_attention_kernel: variants(_paged_attention_kernel,
                                          [{"GROUP": _MIN_DOT_ROWS, "DIM": dim, "BLOCK_N": GPU_BLOCK_N,
                                            "DOT_FP32": False}
                                           for dim in (64, 128)], ATTENTION_WARPS),
    }


DEVICE_FUNCTIONS = ()
