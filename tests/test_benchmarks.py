"""The benchmarks' measurement logic (not their figures): what a flawed measurement once got wrong."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import input_pipeline  # noqa: E402


class FakeLoader:
    """A loader that holds up to `depth` batches ready and makes one every `interval` s (a thread
    filling a bounded queue, as grain's workers fill their buffers); `made` holds when each batch
    was ready and `took` how long making it took (what the loader really did, sleeps overshooting on
    a busy host included; not the time it waited for room in a full buffer)."""

    def __init__(self, depth: int, interval: float):
        import queue
        import threading

        self.q, self.interval, self.stop, self.made, self.took = queue.Queue(depth), interval, threading.Event(), [], []
        threading.Thread(target=self._make, daemon=True).start()

    def _make(self):
        while not self.stop.is_set():
            t = time.perf_counter()
            time.sleep(self.interval)  # simulated work: one batch per interval
            self.made.append(time.perf_counter())
            self.took.append(self.made[-1] - t)
            self.q.put("batch")

    def __call__(self):
        return self.q.get()


def test_the_buffer_depth_is_measured_not_assumed():
    """9 per worker at 2 workers, as grain 0.2.18 was seen to hold: the measurement finds them.
    A draw from the buffer is told from one that waits for a batch by `fast` (20 ms, far below the
    50 ms a batch takes, far above what a buffered draw takes on a loaded host)."""
    fake = FakeLoader(18, 0.05)
    got = input_pipeline.buffer_depth(fake, settle=1.2, fast=0.02)
    fake.stop.set()
    assert 17 <= got <= 19, got


def test_the_loader_fed_rate_is_the_loaders_true_rate_with_a_deep_buffer():
    """A loader at about 1/4 of the step's rate behind a buffer of 9 batches (one worker's, as grain
    holds them: deeper than the 2 per worker the old drain assumed): the loader-fed rounds' time per
    step comes out within 3 % of the mean time the loader really took per batch while measured (a
    sleep that overshoots on a busy host counts where it happened). That is the part of the
    loader-fed / synthetic ratio a flawed drain gets wrong; the synthetic side is a plain timing.
    Drained, 20 probe runs came within 1.3 % (half of them beside two busy processes); not draining
    the buffer first overstated it by 5.0-6.1 % in 20 (up to 10 batches of 160 free). The test once
    compared the ratio itself with mean step / mean batch time at 5 %, and failed in CI at 5.4 %: the
    synthetic rounds on a loaded host differ by 20 % and their loop's overhead is not in a step."""
    make_s = 0.012
    fake = FakeLoader(9, make_s)

    def step(batch):
        time.sleep(make_s / 4)  # a step (that, like a device step, leaves the GIL free)

    depth = input_pipeline.buffer_depth(fake, settle=0.3, fast=0.006)
    start = time.perf_counter()
    fed, synth = input_pipeline.fed_vs_synthetic(fake, step, "synthetic", lambda m: None, 1, 80, 2, depth)
    fake.stop.set()
    took = [d for t, d in zip(fake.made, fake.took) if t > start]
    fed_step_s, batch_s = sum(1 / r for r in fed) / len(fed), sum(took) / len(took)
    assert abs(batch_s / fed_step_s - 1) < 0.03, (batch_s, fed_step_s, fed, synth, depth)


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
