"""Exact size of libjpeg's Huffman-coded scan, computed on the accelerator from quantised coefficients.

A baseline grayscale scan (ITU T.81 F.1.2, as libjpeg-turbo's jchuff.c writes it) is a sequence of
bit fields: per 8x8 block, the DC difference's size category (Huffman code) and magnitude bits, then
for each nonzero AC coefficient in zig-zag order its (run, size) symbol and magnitude bits, a ZRL
(0xF0) for every 16 zeros before it, and an EOB (0x00) when the block ends in zeros. After the last
block the bits are padded with ones to a byte, and every 0xFF byte of the result is followed by a
stuffed 0x00. So the byte count needs the actual bits, not only their number.

How it is computed without writing a stream: each of a block's 64 zig-zag positions owns at most
one field (its coefficient's code + magnitude, a ZRL charged to the 16th, 32nd, 48th zero of a run
that a nonzero follows, or the EOB charged to position 63), at most 16 + 11 = 27 bits, so a uint32.
Prefix sums give each field's bit offset, and a running maximum of "position of the last 0 bit so
far" tells, for each byte that ends inside a field, whether all its 8 bits are ones. All of it is
elementwise work, prefix sums and gathers over [..., blocks, 64]: it vectorises over images.

Huffman tables: the default ones are Annex K's (K.3 luminance DC, K.5 luminance AC). With
``optimize`` libjpeg builds per-image tables from the symbol histogram (jpeg_gen_optimal_table:
Huffman's procedure with ties to the larger symbol, the reserved pseudo-symbol 256, then the K.2
adjustment to 16-bit codes); `optimal_tables` computes the same tables, vectorised over images,
with a fixed amount of work (no data-dependent loop: on a GPU every iteration of one waits for
the host to read its condition).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.codecs.jpeg.jfif import DEFAULT_DHT_BYTES

MAX_CODE_LEN = 16
DHT_SEGMENT = 2 + 2 + 1 + MAX_CODE_LEN  # marker, length, class/id, BITS; then one byte per symbol


def zigzag_order() -> np.ndarray:
    """Natural (row-major) index of each zig-zag position (libjpeg's jpeg_natural_order)."""
    order = []
    for s in range(15):  # anti-diagonals r + c = s, alternating direction
        rows = range(max(0, s - 7), min(s, 7) + 1)
        order += [r * 8 + (s - r) for r in (rows if s % 2 else reversed(rows))]
    return np.asarray(order)


ZIGZAG = zigzag_order()


def _annex_k_lengths() -> tuple[np.ndarray, np.ndarray]:
    """Code length of every symbol in the Annex K luminance tables (0 = symbol not in the table).

    K.3 (DC) gives lengths per size category; in K.5 (AC) the symbols with codes shorter than 16
    bits are listed per length, and the other valid symbols, run 0..15 x size 1..10, get 16 bits.
    """
    dc = np.zeros(256, np.int32)
    dc[:12] = [2, 3, 3, 3, 3, 3, 4, 5, 6, 7, 8, 9]
    ac = np.zeros(256, np.int32)
    ac[[(run << 4) | size for run in range(16) for size in range(1, 11)]] = 16
    short = {
        2: [0x01, 0x02],
        3: [0x03],
        4: [0x00, 0x04, 0x11],
        5: [0x05, 0x12, 0x21],
        6: [0x31, 0x41],
        7: [0x06, 0x13, 0x51, 0x61],
        8: [0x07, 0x22, 0x71],
        9: [0x14, 0x32, 0x81, 0x91, 0xA1],
        10: [0x08, 0x23, 0x42, 0xB1, 0xC1],
        11: [0x15, 0x52, 0xD1, 0xF0],
        12: [0x24, 0x33, 0x62, 0x72],
        15: [0x82],
    }
    for length, symbols in short.items():
        ac[symbols] = length
    return dc, ac


def length_counts(lengths, max_len: int = MAX_CODE_LEN, xp=np):
    """BITS (T.81 B.2.4.2): how many symbols have each code length, [..., max_len + 1], index = length."""
    lens = xp.arange(max_len + 1)
    return ((lengths[..., None] == lens) & (lens > 0)).sum(-2).astype(xp.int32)


def canonical_codes(order_key, bits, xp=np):
    """Codes and lengths per symbol, given the order of HUFFVAL and BITS (T.81 Annex C).

    ``order_key`` [..., 256]: symbols sorted by it form HUFFVAL (a negative key = not coded);
    ``bits`` [..., 17]. The i-th symbol of HUFFVAL gets the i-th code length of BITS, and codes are
    assigned canonically (C.2): consecutive within a length, doubled when the length grows.
    """
    n_coded = (order_key >= 0).sum(-1, keepdims=True)
    big = xp.iinfo(xp.int32).max
    rank = xp.argsort(xp.argsort(xp.where(order_key >= 0, order_key, big), axis=-1), axis=-1)
    ends = xp.cumsum(bits[..., 1:], axis=-1)  # [..., 16]: codes of length <= l
    length = 1 + (ends[..., None, :] <= rank[..., :, None]).sum(-1)
    first, code = [], xp.zeros(bits.shape[:-1], xp.int32)
    for l in range(1, MAX_CODE_LEN + 1):
        first.append(code)
        code = (code + bits[..., l]) << 1
    first = xp.stack(first, -1)  # [..., 16]: first code of each length
    starts = ends - bits[..., 1:]  # rank of the first symbol of each length
    li = xp.clip(length - 1, 0, MAX_CODE_LEN - 1)
    take = lambda a: xp.take_along_axis(a, li, axis=-1)
    codes = take(first) + rank - take(starts)
    coded = rank < n_coded
    return xp.where(coded, codes, 0).astype(xp.uint32), xp.where(coded, length, 0).astype(xp.int32)


def _default_tables():
    """Annex K tables as flat [512] (DC symbols at 0..255, AC at 256..511) code / length arrays."""
    codes, lengths = [], []
    for lens in _annex_k_lengths():
        key = np.where(lens > 0, lens * 256 + np.arange(256), -1)
        c, l = canonical_codes(key, length_counts(lens))
        codes.append(c)
        lengths.append(l)
    return np.concatenate(codes), np.concatenate(lengths)


DEFAULT_CODES, DEFAULT_LENGTHS = _default_tables()
assert 2 * DHT_SEGMENT + int((DEFAULT_LENGTHS > 0).sum()) == DEFAULT_DHT_BYTES  # Annex K DC and AC tables


def bit_length(v):
    """Bits needed for |v| (T.81's SSSS category): 0 for 0."""
    return 32 - jax.lax.clz(jnp.abs(v))


def _trailing_ones(w):
    return jax.lax.population_count(w ^ (w + 1)).astype(jnp.int32) - 1


def _exclusive(op, x, axis: int, init):
    """Exclusive prefix sum (op="sum") or maximum ("max") along `axis`, starting from `init`."""
    inc = jnp.cumsum(x, axis=axis) if op == "sum" else jax.lax.cummax(x, axis=axis)
    pad = jnp.full_like(jax.lax.index_in_dim(inc, 0, axis, keepdims=True), init)
    return jnp.concatenate([pad, jax.lax.slice_in_dim(inc, 0, inc.shape[axis] - 1, axis=axis)], axis=axis)


def fields_symbols(zz):
    """Per zig-zag position of each block: (table index into the flat tables, extra bits, their value, emitted).

    ``zz`` int32 [..., n_blocks, 64] in scan order. Index = 256 * (AC) + symbol.
    """
    dc = zz[..., 0]
    diff = dc - jnp.concatenate([jnp.zeros_like(dc[..., :1]), dc[..., :-1]], axis=-1)
    ac = zz[..., 1:]
    k = jnp.arange(1, 64, dtype=jnp.int32)
    nz = ac != 0
    at = jnp.where(nz, k, 0)
    last = jnp.max(at, axis=-1, keepdims=True)  # last nonzero AC position (0: none)
    prev = _exclusive("max", at, at.ndim - 1, 0)  # last nonzero before k (0: the DC)
    zeros_so_far = k - prev  # for a zero: its rank in the current run; for a nonzero: run + 1
    zrl = ~nz & (zeros_so_far % 16 == 0) & (k < last)
    eob = ~nz & (k == 63)
    size = jnp.concatenate([bit_length(diff)[..., None], bit_length(ac)], axis=-1)
    value = jnp.concatenate([diff[..., None], ac], axis=-1)
    ac_sym = jnp.where(nz, (((zeros_so_far - 1) & 15) << 4) | size[..., 1:], jnp.where(zrl, 0xF0, 0x00))
    index = jnp.concatenate([size[..., :1], 256 + ac_sym], axis=-1)
    emitted = jnp.concatenate([jnp.ones_like(nz[..., :1]), nz | zrl | eob], axis=-1)
    size = jnp.where(emitted, size, 0)
    mag = jnp.where(value < 0, value - 1, value) & ((1 << size) - 1)  # T.81 F.1.2.1: negatives as v - 1
    return index, size, mag.astype(jnp.uint32), emitted


def stream_bytes(value, length):
    """Bytes of the entropy-coded segment made of these bit fields, padding and 0xFF stuffing included.

    ``value`` uint32 / ``length`` int32, [..., n_blocks, 64]: fields in stream order (MSB first).
    A byte is attributed to the field holding its last bit. Bytes wholly inside a field are all
    ones where the field has 8 ones in a row ending on a byte boundary; the one byte a field's
    start may cut also needs the bits before the field, so the position of the last 0 bit before
    each field is carried along by a prefix maximum.
    """
    nd = length.ndim
    # bit offset of every field: within its block, plus the block's own offset
    pos = _exclusive("sum", length, nd - 1, 0) + _exclusive("sum", length.sum(-1), nd - 2, 0)[..., None]
    total = length.sum((-2, -1))
    t = _trailing_ones(value)
    last_zero = jnp.where(t < length, pos + length - 1 - t, -1)  # of this field; -1: none
    before = jnp.maximum(
        _exclusive("max", last_zero, nd - 1, -1), _exclusive("max", last_zero.max(-1), nd - 2, -1)[..., None]
    )
    # bit i (from the LSB) of `run8` is set iff field bits i..i+7 are all ones; a byte boundary
    # falls after LSB index i when (pos + length - i) % 8 == 0
    run8 = value & (value >> 1)
    run8 = run8 & (run8 >> 2)
    run8 = run8 & (run8 >> 4)
    aligned = jnp.uint32(0x01010101) << ((pos + length) & 7).astype(jnp.uint32)
    whole = jax.lax.population_count(run8 & aligned).astype(jnp.int32)
    # the byte that began before the field and ends inside it: its m bits here must be ones, and
    # the 8 - m bits before the field too
    m = 8 - (pos & 7)
    top = value >> jnp.clip(length - m, 0, 31).astype(jnp.uint32)
    cut = (m < 8) & (m <= length) & (top == (jnp.uint32(1) << m.astype(jnp.uint32)) - 1) & (before < pos - (8 - m))
    stuffed = whole.sum((-2, -1)) + cut.sum((-2, -1))
    # the last partial byte is padded with 1 bits; it is stuffed too if it becomes 0xFF
    pad_ff = (total % 8 != 0) & (last_zero.max((-2, -1)) < (total // 8) * 8)
    return (total + 7) // 8 + stuffed + pad_ff.astype(jnp.int32)


# The symbols baseline 8-bit JPEG can emit (T.81 F.1.2): DC size categories 0..11; AC EOB, ZRL and
# (run 0..15, size 1..10). Only these can have nonzero counts, so the tables are built over them alone.
DC_SYMBOLS = np.arange(12)
AC_SYMBOLS = np.array(sorted([0x00, 0xF0] + [(run << 4) | size for run in range(16) for size in range(1, 11)]))


def max_code_length(total: int) -> int:
    """The longest code Huffman's procedure can give for integer counts summing to `total`: the
    largest d with Fibonacci F(d + 2) <= total (the least total weight of a depth-d Huffman tree)."""
    a, b, d = 1, 2, 0  # F(d + 2), F(d + 3)
    while b <= total:
        a, b, d = b, a + b, d + 1
    return max(d, 1)


def _huffman_code_sizes(freq, merges: int):
    """libjpeg's jpeg_gen_optimal_table, Huffman part: code size per symbol, [..., n] -> [..., n].

    Symbols in increasing number (the pseudo-symbol last). Repeatedly merge the two least frequent
    trees (ties: the larger symbol number) and lengthen every code in both. `merges` (static) is
    the most any input can need (symbols - 1): the steps are unrolled, so the program has no
    data-dependent loop (on a GPU each iteration of one would wait for the host); a row with
    fewer trees just stops changing.
    """
    n = freq.shape[-1]
    idx = jnp.arange(n, dtype=jnp.int32)
    big = jnp.iinfo(jnp.int32).max
    zero = freq * 0  # carries derived from freq share its type (varying inside shard_map)
    f, group, size = freq, zero + idx, zero
    for _ in range(merges):
        # one key orders by count, ties to the larger symbol (counts < 2^31 / 512 here)
        key = jnp.where(f > 0, f * 512 + (511 - idx), big)
        k1 = key.min(-1, keepdims=True)
        c1 = 511 - (k1 & 511)
        k2 = jnp.where(idx == c1, big, key).min(-1, keepdims=True)
        c2, merge = 511 - (k2 & 511), k2 < big
        size = size + (merge & ((group == c1) | (group == c2)))
        f = jnp.where(merge & (idx == c1), f + (k2 >> 9), jnp.where(merge & (idx == c2), 0, f))
        group = jnp.where(merge & (group == c2), c1, group)
    return size


def _limit_lengths(bits, longest: int):
    """T.81 K.2 (libjpeg's adjustment), no code longer than 16 bits, then drop the pseudo-symbol.

    ``bits`` [..., 33] (index = length); ``longest`` (static) bounds the lengths present. libjpeg
    loops: for i = longest..17, while bits[i] > 0, take two codes of length i, give one length
    i - 1 and hang the other below the longest code of length j <= i - 2 (both become j + 1).
    Per level i the pairs it moves are bits[i] / 2 at once, and the codes it splits, always the
    longest available, are used up deepest level first, a whole code subtree at a time: a code at
    level k <= m = i - 2 absorbs 2^(m+1-k) - 1 splits (its subtree filled down to level m + 1).
    So each level is closed-form arithmetic over the 33 lengths plus one partly filled subtree,
    walked down level by level: fixed work, no data-dependent loop.

    Why a second Annex K.2 beside huffman.fit_lengths (numpy, libjpeg's loop as written): this one
    runs per image inside the compiled step (optimize=True), where a loop whose trip count depends
    on the data would stall an accelerator; huffman.fit_lengths fits one table to a training
    split's histogram on the host. Tested: this one against a line-by-line port of libjpeg's builder
    (tests/test_jpeg_device.py), that one by cv2 decoding streams under its tables (test_jpeg_huffman.py).
    """
    lens = jnp.arange(bits.shape[-1], dtype=jnp.int32)
    cap = jnp.int32(1 << 20)  # more splits than any level can ask for (<= 128): costs beyond it are equal
    for i in range(longest, MAX_CODE_LEN, -1):
        m = i - 2
        r = bits[..., i : i + 1] // 2  # pairs at level i (an even count: the deepest level of a full tree)
        bits = bits + jnp.where(lens == i, -bits[..., i : i + 1], 0) + jnp.where(lens == i - 1, r, 0)
        region = (lens >= 1) & (lens <= m)
        cost = jnp.where(region, jnp.minimum((jnp.int32(2) << jnp.clip(m - lens, 0, 30)) - 1, cap), 0)
        load = bits * cost  # splits each level's codes absorb when filled to level m + 1
        cum = jnp.flip(jnp.cumsum(jnp.flip(load, -1), -1), -1)  # levels >= k (deepest first)
        partial = region & (cum > r)
        kstar = jnp.max(jnp.where(partial, lens, 0), -1, keepdims=True)  # the level used up only in part
        full = region & (lens > kstar)  # levels used up entirely
        before = jnp.sum(jnp.where(full, load, 0), -1, keepdims=True)
        leaves = jnp.sum(jnp.where(full, bits, 0), -1, keepdims=True)
        ck = jnp.sum(jnp.where(lens == kstar, cost, 0), -1, keepdims=True)
        rem = jnp.where(kstar > 0, r - before, 0)
        whole = rem // jnp.maximum(ck, 1)  # codes of level k* filled entirely
        t = rem - whole * ck  # splits left for one code of level k*, fewer than fill it
        bits = jnp.where(full, 0, bits)
        bits = bits + jnp.where(lens == kstar, -(whole + (t > 0)), 0)
        bits = bits + jnp.where(lens == m + 1, before + leaves + whole * (ck + 1), 0)
        # the partly filled code (t splits, t <= r <= 81: a level holds at most 163 codes): split
        # it; if t - 1 >= a child's fill cost, fill the first child (its codes all at m + 1) and
        # carry on in the second with t - 1 - that cost, else leave the second child a code and
        # carry on in the first with t - 1; a node reached with no splits left is a code. While a
        # child's size 2^(m-level) exceeds t, it only leaves codes at the next levels: that run is
        # computed at once, the rest (< 8 levels, as 2^7 > 81) step by step.
        k, t = kstar[..., 0], t[..., 0]
        e = jnp.arange(bits.shape[-1], dtype=jnp.int32)
        depth = m + 1 - k  # levels below k* down to m + 1
        stop = (e < depth[..., None]) & (
            (jnp.int32(1) << jnp.clip(depth[..., None] - e - 1, 0, 30)) <= t[..., None] - e
        )
        run = jnp.minimum(jnp.min(jnp.where(stop, e, 99), -1), t)  # levels of the run
        bits = bits + ((lens > k[..., None]) & (lens <= (k + run)[..., None])).astype(bits.dtype)
        level, t = k + run, t - run
        bits = bits + jnp.where(((run > 0) & (t == 0))[..., None] & (lens == level[..., None]), 1, 0)
        filled, at = 0, []
        for _ in range(8):
            live = t > 0
            child = (jnp.int32(1) << jnp.clip(m - level, 0, 30)) - 1  # a child's fill cost
            fill = live & (t - 1 >= child)
            filled = filled + jnp.where(fill, child + 1, 0)
            at.append(jnp.where(live & ~fill, level + 1, -1))  # the second child, left a code
            t = jnp.where(fill, t - 1 - child, t - live)
            level = level + live
            at.append(jnp.where(live & (t == 0), level, -1))  # where the walk ends
        bits = bits + (jnp.stack(at, -1)[..., None, :] == lens[:, None]).sum(-1).astype(bits.dtype)
        bits = bits + jnp.where(lens == m + 1, filled[..., None], 0)
    bits = bits - (lens == jnp.max(jnp.where(bits > 0, lens, -1), -1, keepdims=True))  # the pseudo-symbol
    return bits[..., : MAX_CODE_LEN + 1]


def optimal_tables(freq, n_blocks: int):
    """Per-image optimal Huffman tables, as libjpeg builds them for ``optimize_coding``.

    ``freq`` int32 [..., 2, 256] symbol counts (DC, AC) of images of ``n_blocks`` blocks (static:
    it bounds the counts, hence the code lengths) -> (codes uint32 [..., 2, 256], lengths int32
    [..., 2, 256], BITS [..., 2, 17]); unused symbols get length 0.
    """
    if 63 * n_blocks + 1 >= (1 << 31) // 512:
        raise ValueError(f"optimize=True: {n_blocks} blocks per image is more than the table builder counts in int32")
    out = []
    for t, (symbols, total) in enumerate(((DC_SYMBOLS, n_blocks), (AC_SYMBOLS, 63 * n_blocks))):
        f = jnp.concatenate([freq[..., t, symbols], jnp.ones_like(freq[..., t, :1])], -1)  # + pseudo-symbol 256
        size = _huffman_code_sizes(f, len(symbols))
        longest = min(max_code_length(total + 1), 32)  # libjpeg's MAX_CLEN
        bits = _limit_lengths(length_counts(size, 32, jnp), longest)
        full = jnp.zeros(size.shape[:-1] + (256,), jnp.int32).at[..., symbols].set(size[..., :-1])
        key = jnp.where(full > 0, full * 256 + jnp.arange(256), -1)
        out.append((*canonical_codes(key, bits, jnp), bits))
    return tuple(jnp.stack(v, -2) for v in zip(*out))


def scan_bytes(zz, optimize: bool = False):
    """(entropy-coded bytes, DHT segment bytes) per image from quantised zig-zag blocks.

    ``zz`` int32 [..., n_blocks, 64] in scan order (row-major over the block grid).
    """
    index, size, mag, emitted = fields_symbols(zz)
    if optimize:
        lead = zz.shape[:-2]
        n = int(np.prod(lead, dtype=np.int64))
        flat = jnp.where(emitted, index, 512).reshape(n, -1)
        hist = jax.vmap(lambda ix: jnp.zeros(513, jnp.int32).at[ix].add(1))(flat)[:, :512].reshape(*lead, 2, 256)
        codes, lengths, bits = optimal_tables(hist, zz.shape[-2])
        codes, lengths = codes.reshape(*lead, 512), lengths.reshape(*lead, 512)
        take = lambda t: jnp.take_along_axis(t, index.reshape(*lead, -1), -1).reshape(index.shape)
        code, code_len = take(codes), take(lengths)
        dht = 2 * DHT_SEGMENT + bits[..., 1:].sum((-2, -1))
    else:
        code, code_len = jnp.asarray(DEFAULT_CODES)[index], jnp.asarray(DEFAULT_LENGTHS)[index]
        dht = jnp.full(zz.shape[:-2], DEFAULT_DHT_BYTES, jnp.int32)
    length = jnp.where(emitted, code_len + size, 0)
    value = jnp.where(emitted, (code << size.astype(jnp.uint32)) | mag, 0).astype(jnp.uint32)
    return stream_bytes(value, length), dht
