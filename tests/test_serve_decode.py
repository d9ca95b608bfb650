"""The server's decoder with the learned codecs (the demo's exports, conftest.demo_exports): payloads of every
length the size check lets through, random but with a valid CRC, are each refused with a one-line
error and compile nothing after warm-up (each new stream width once cost a ~0.8 s compile stall a
hostile client could trigger), and a bad rANS stream decoded in one call with good ones fails only
itself."""

import numpy as np
import pytest

from bottlenet_jax.serve.payload import BATCHES, DecodeQueue, PayloadDecoder
from bottlenet_jax.serve.protocol import PayloadError, frame

from helpers import gate_decoder

# The slow stage (the exports take a minute to build); one worker builds them for the session (-n 2).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo_exports")]


@pytest.fixture(scope="module", params=["entropy", "hyperprior"])
def decoder(request, demo_exports):
    d = PayloadDecoder(demo_exports[request.param])
    d.warm_up()
    return d


def _good(decoder, n: int, seed: int):
    """Framed payloads of n test features (the codec's own encoding) and what they decode to."""
    z = np.random.default_rng(seed).normal(0, 1.5, (n, *decoder.feature_shape)).astype(np.float32)
    bodies = decoder.codec.encode(z, state=decoder.state)
    return [frame(b) for b in bodies], decoder.codec.decode(bodies, (n, *decoder.feature_shape), state=decoder.state)


def test_random_payloads_of_every_length_are_refused_without_a_compile(decoder, request):
    good, _ = _good(decoder, 2, 0)  # encoding may compile: before the count starts
    decoder.warm_up()
    rng = np.random.default_rng(1)
    most = decoder.max_payload + 4  # the size check's bound, framed
    step = 1 if request.config.getoption("-m") == "slow" else 7  # every length in the slow stage
    lengths = list(range(1, most + 2, step)) + [most - 1, most, most + 1]
    refused = []
    for a in range(0, len(lengths), BATCHES[-1]):
        elements = [frame(rng.bytes(n - 4)) if n > 4 else rng.bytes(n) for n in lengths[a : a + BATCHES[-1]]]
        refused += decoder.decode_many(elements)
    assert all(isinstance(r, PayloadError) for r in refused), [
        n for n, r in zip(lengths, refused) if not isinstance(r, PayloadError)
    ][:5]
    assert all("\n" not in str(r) and str(r).startswith("payload of ") for r in refused)
    assert decoder.compiles_since_warmup == 0
    np.testing.assert_array_equal(decoder.decode_one(good[0]), _good(decoder, 2, 0)[1][0])  # still decodes


def test_one_bad_stream_in_a_batched_decode_fails_only_its_own_request(decoder):
    """Requests queued while a decode runs are decoded in one call (DecodeQueue); the bad stream's
    request gets its PayloadError, the others their features, bit for bit as decoded alone."""
    good, want = _good(decoder, 5, 2)  # decoding them alone may compile: before the count starts
    decoder.warm_up()
    body = good[1][:-4]
    k = len(body) // 2
    bad = frame(body[:k] + bytes([body[k] ^ 0x40]) + body[k + 1 :])  # one word changed: decodes, then fails
    gate, started = gate_decoder(decoder, 30)
    q = DecodeQueue(decoder, workers=1)
    try:
        first = q.submit(good[:1])
        assert started.wait(30)
        futs = [q.submit(e) for e in (good[1:3], [bad], good[3:5])]
        gate.set()
        np.testing.assert_array_equal(first.result(30), want[:1])
        np.testing.assert_array_equal(futs[0].result(30), want[1:3])
        with pytest.raises(PayloadError, match="cannot decode"):
            futs[1].result(30)
        np.testing.assert_array_equal(futs[2].result(30), want[3:5])
        assert q.calls == 2 and q.payloads == 6  # the three queued requests in one call
    finally:
        del decoder.decode_many
        q.close()
    assert decoder.compiles_since_warmup == 0
