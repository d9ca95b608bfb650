"""The benchmarks' measurement logic (not their figures): what a flawed measurement once got wrong."""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import input_pipeline  # noqa: E402

from bottlenet_jax.data import loader  # noqa: E402


class CountingIterator:
    def __init__(self):
        self.drawn = 0

    def __next__(self):
        self.drawn += 1
        return {}

    def close(self):
        pass


def test_loader_rate_draws_the_buffer_before_timing(monkeypatch):
    """grain's workers hold 2 batches each: they are drawn untimed, and at least 4 x workers are timed
    (an H200 run that timed 6 batches after 1 at 8 workers read 330,989 img/s)."""
    its = []
    monkeypatch.setattr(loader, "train_iterator", lambda *a, **k: its.append(CountingIterator()) or its[-1])
    monkeypatch.setattr(input_pipeline.time, "sleep", lambda s: None)
    for workers, batches, expect in ((8, 6, 1 + 16 + 32), (0, 6, 1 + 2 + 6), (2, 12, 1 + 4 + 12)):
        cfg = ml_collections.ConfigDict({"data_workers": workers, "batch_size": 4})
        assert input_pipeline.loader_rate(None, cfg, batches, warmup=1) > 0
        assert its[-1].drawn == expect


def test_gpu_suite_skips_a_stage_whose_wheels_are_missing(tmp_path, monkeypatch):
    """A stage that would fail at import is reported as skipped, naming the module, without running
    (the first H200 run lost its train, loader and anchor stages that way)."""
    import importlib.util

    import gpu_suite

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "grain" else real(m, *a))
    d = gpu_suite.run_stage("loader", type("A", (), {"smoke": True, "out": str(tmp_path), "commit": "x"})())
    assert d["status"].startswith("skipped: grain not importable") and d["wall"] == 0.0
    assert not (tmp_path / "loader.txt").exists()


def test_http2_frame_bytes_sorts_a_client_stream_by_frame_type():
    """serve_load's framing breakdown: frame headers under their type, DATA bodies left out (they are
    the gRPC messages), frames before `start` not counted, the connection preface skipped."""
    import serve_load

    def frame(kind, body):
        return len(body).to_bytes(3, "big") + bytes([kind, 0]) + (1).to_bytes(4, "big") + body

    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    early = frame(4, b"\0" * 6)  # SETTINGS, before the measured window
    window = frame(0, b"m" * 50) + frame(8, b"\0\0\0\x70") + frame(8, b"\0\0\0\x70") + frame(6, b"\0" * 8)
    sent = preface + early + window
    got = serve_load.http2_frame_bytes(sent, len(preface + early), len(sent))
    assert got == {"DATA": 9, "WINDOW_UPDATE": 26, "PING": 17}
