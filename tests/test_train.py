"""The training system end to end on mock ImageNet records over 4 forced CPU devices.

Runs go through tests/mock_train.py in fresh processes, as a user's would (and so SIGKILL is real).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _data(mock_imagenet):
    global DATA
    DATA = str(mock_imagenet)


def run_mock(workdir, out, *overrides, env=None, check=True):
    p = subprocess.run(
        [sys.executable, os.path.join(HERE, "mock_train.py"), DATA, str(workdir), str(out), *overrides],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        timeout=600,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"rc={p.returncode}\n{p.stderr[-3000:]}")
    return p


STEPS = ("num_train_steps=6", "checkpoint_every_steps=2", "eval_every_steps=6")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("uninterrupted")
    run_mock(d / "wd", d / "out.json", *STEPS)
    return d / "wd", json.loads((d / "out.json").read_text())


def test_trains_evaluates_and_saves(uninterrupted):
    wd, out = uninterrupted
    assert out["step"] == 6
    s = out["summary"]
    assert s["step"] == 6 and s["examples"] == 16
    for k in ("top1", "top5", "bytes_full_mean", "bytes_full_median", "bytes_full_p95", "bytes_payload_p95"):
        assert k in s
    assert 0 < s["bytes_payload_mean"] < s["bytes_full_mean"]
    assert sorted(os.listdir(wd / "checkpoints")) == ["2", "4", "6"]
    assert os.listdir(wd / "best") == ["6"] and (wd / "eval_step_6.json").exists()
    assert s["checkpoint"].startswith("best validation") and s["split"] == "validation"  # test split, once
    assert json.loads((wd / "eval_step_6.json").read_text())["split"] == "train[:16]"
    assert any(f.startswith("events") for f in os.listdir(wd / "tensorboard"))
    assert not out["tensorflow_imported"]  # the grain/OpenCV loader: TensorFlow only prepares datasets


def test_sigkill_after_checkpoint_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
    killed = run_mock(tmp_path / "wd", tmp_path / "a.json", *STEPS, "kill_after_checkpoint_step=4", check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "wd" / "checkpoints")) == ["2", "4"]
    resumed = run_mock(tmp_path / "wd", tmp_path / "b.json", *STEPS)
    assert "resumed from" in resumed.stdout + resumed.stderr and "/checkpoints/4" in resumed.stdout + resumed.stderr
    out = json.loads((tmp_path / "b.json").read_text())
    assert out["step"] == 6  # the step count continued
    assert out["digest"] == uninterrupted[1]["digest"]  # bit-identical parameters
    # a third invocation finds the run complete: nothing more to train, same parameters
    again = run_mock(tmp_path / "wd", tmp_path / "c.json", *STEPS)
    assert json.loads((tmp_path / "c.json").read_text())["digest"] == out["digest"], again.stderr[-500:]


def test_exported_halves_through_bytes_equal_full_model(uninterrupted, tmp_path):
    import jax

    from bottlenet_jax.checkpoint import Checkpoints, load_config
    from bottlenet_jax.export import Half, export_workdir, load_codec, load_manifest
    from bottlenet_jax.models import build_model

    wd, _ = uninterrupted
    m = export_workdir(str(wd), str(tmp_path / "export"))
    assert m["split_after"] == 2 and m["feature_shape"] == [8, 8, 4] and len(m["label_names"]) == 1000
    assert load_manifest(str(tmp_path / "export"))["codec"]["name"] == "jpeg"
    edge, cloud = Half(str(tmp_path / "export"), "edge"), Half(str(tmp_path / "export"), "cloud")
    codec, state = load_codec(str(tmp_path / "export"))
    x = np.random.default_rng(0).normal(size=(5, 64, 64, 3)).astype(np.float32)
    z = np.asarray(edge(x))
    payloads = codec.encode(z, state=state)
    assert all(isinstance(p, bytes) for p in payloads)
    logits = np.asarray(cloud(codec.decode(payloads, z.shape, state=state)))
    cfg = load_config(str(wd))
    raw = Checkpoints(str(wd)).restore_raw()
    full, stats = jax.jit(build_model(cfg, bn_axis_name=None).apply)(
        {"params": raw["params"], "batch_stats": raw["batch_stats"]}, x
    )
    np.testing.assert_array_equal(logits, np.asarray(full))
    assert [len(p) for p in payloads] == list(np.asarray(stats["bytes_payload"]))
    from bottlenet_jax.errors import CheckpointError

    before = (tmp_path / "export" / "manifest.json").read_bytes()
    with pytest.raises(CheckpointError, match="already holds an export"):  # never overwritten
        export_workdir(str(wd), str(tmp_path / "export"))
    assert (tmp_path / "export" / "manifest.json").read_bytes() == before


def test_channel_conditioned_edge_exports_with_the_condition_as_input(tmp_path):
    """BottleNet++: the exported edge takes sigma per sample and equals the model's own edge."""
    import jax

    from bottlenet_jax.checkpoint import Checkpoints, load_config
    from bottlenet_jax.export import Half, export_workdir, load_codec
    from bottlenet_jax.models import build_model

    run_mock(
        tmp_path / "wd",
        tmp_path / "out.json",
        "codec=awgn",
        "split.condition=True",
        "num_train_steps=1",
        "checkpoint_every_steps=1",
        "eval_every_steps=1",
    )
    m = export_workdir(str(tmp_path / "wd"), str(tmp_path / "export"))
    assert m["edge_condition"] == "sigma"
    edge, cloud = Half(str(tmp_path / "export"), "edge"), Half(str(tmp_path / "export"), "cloud")
    x = np.random.default_rng(0).normal(size=(3, 64, 64, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="channel-conditioned"):
        edge(x)
    cfg = load_config(str(tmp_path / "wd"))
    raw = Checkpoints(str(tmp_path / "wd")).restore_raw()
    v = {"params": raw["params"], "batch_stats": raw["batch_stats"]}
    model = build_model(cfg, bn_axis_name=None)
    sigma = np.array([0.0, 0.1, 0.3], np.float32)
    z = np.asarray(edge(x, condition=sigma))
    own = jax.jit(lambda v, x, c: model.apply(v, x, part="edge", condition=c))  # v as an argument, as exported
    np.testing.assert_array_equal(z, np.asarray(own(v, x, sigma)))
    assert not np.array_equal(z, np.asarray(edge(x, condition=0.2)))  # the condition reaches the encoder
    codec, state = load_codec(str(tmp_path / "export"))
    logits = np.asarray(cloud(codec.decode(codec.encode(z, state=state), z.shape, state=state)))
    np.testing.assert_array_equal(logits, np.asarray(jax.jit(lambda v, z: model.apply(v, z, part="cloud"))(v, z)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_via_jax_distributed_hold_identical_params(tmp_path):
    port = _free_port()
    base = {
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.join(HERE, "mock_train.py"),
                DATA,
                str(tmp_path / "wd"),
                str(tmp_path / f"p{i}.json"),
                "num_train_steps=2",
                "eval_every_steps=2",
                "eval_examples=16",
                "checkpoint_every_steps=2",
            ],
            env={**os.environ, **base, "JAX_PROCESS_ID": str(i)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    r = [json.loads((tmp_path / f"p{i}.json").read_text()) for i in range(2)]
    assert [x["process"] for x in r] == [0, 1] and r[0]["step"] == r[1]["step"] == 2
    assert r[0]["digest"] == r[1]["digest"]
    assert r[0]["summary"]["examples"] == 16  # each process evaluated its half; results all-gathered


def test_host_and_device_jpeg_train_to_bit_identical_parameters(uninterrupted, tmp_path):
    """The whole trainer on mock ImageNet: codec.backend=device ends where the host codec does."""
    run_mock(tmp_path / "wd", tmp_path / "out.json", *STEPS, "codec.backend=device")
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["digest"] == uninterrupted[1]["digest"]
    for k in ("bytes_full_mean", "bytes_payload_mean", "top1"):
        assert out["summary"][k] == uninterrupted[1]["summary"][k]


def test_input_image_jpeg_codes_each_image_and_classifies_the_decoded_one(uninterrupted, tmp_path):
    import cv2

    from bottlenet_jax.checkpoint import load_config
    from bottlenet_jax.data import loader, records
    from bottlenet_jax.errors import ConfigError
    from bottlenet_jax.evaluation import input_images

    split_wd, _ = uninterrupted
    with pytest.raises(ConfigError, match="plain"):  # a split model's codec bytes would replace the image's
        input_images(load_config(str(split_wd)), str(split_wd), [30])
    wd = tmp_path / "plain"
    run_mock(wd, tmp_path / "out.json", "split.after=0", "num_train_steps=2", "eval_every_steps=2")
    cfg = load_config(str(wd))
    raw, q30, q90 = input_images(cfg, str(wd), [30, 90])
    imgs = np.concatenate(
        [b["image"][b["mask"]] for b in loader.eval_iterator(records.open_prepared(cfg.dataset, cfg.data_dir), cfg)]
    )
    assert raw["q"] is None and raw["bytes_payload_mean"] == imgs[0].size == raw["bytes_full_mean"]
    files = [
        cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 30])[1] for im in imgs
    ]
    assert q30["bytes_full_mean"] == np.mean([f.size for f in files])  # the real files, each image once
    assert q30["bytes_payload_mean"] < q30["bytes_full_mean"] < q90["bytes_full_mean"]
    assert all(0 <= r["top1"] <= 1 and r["examples"] == len(imgs) for r in (raw, q30, q90))
    _, w30 = input_images(cfg, str(wd), [30], fmt="webp")  # the other input-image rival: its VP8 frame
    webps = [
        cv2.imencode(".webp", cv2.cvtColor(im, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 30])[1] for im in imgs
    ]
    assert w30["bytes_full_mean"] == np.mean([f.size for f in webps])
    assert w30["bytes_payload_mean"] <= w30["bytes_full_mean"] - 27
