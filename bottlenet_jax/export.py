"""Export a trained workdir as two standalone halves, and load them back without the training code.

    python -m bottlenet_jax.export --workdir=DIR --out=EXPORT_DIR [--batch=b]

EXPORT_DIR/
  manifest.json        split point, C', stride, kernel, codec settings, input/feature shapes,
                       normalisation, label names (settings and names only: no arrays)
  codec_state/         the codec's fitted state (orbax; absent for codecs without one): e.g. the
                       entropy codec's integer tables, the lightweight codec's quantiser
  codec_state.npz      the same arrays in numpy's format: what the edge runtime reads (no orbax)
  edge.jaxexport       x [b,H,W,Cin] float32 (normalised) -> z [b,h,w,C'] in [0,1]  (serialized jax.export)
  edge_params/         its variables (orbax): stem, RB1..RBk, reduction unit
  cloud.jaxexport      z_hat -> logits
  cloud_params/        restoration unit, RB(k+1)..RBn, head
  edge.onnx            with --onnx: the edge half for ONNX runtimes (onnxruntime, mobile/embedded)

The codec is not in either graph: the device runs `edge`, then `codec.encode(z, state=...)` (real
bytes); the server runs `codec.decode`, then `cloud`. The codec's state is the one fitted for the
exported checkpoint (saved in the workdir by training's final test or eval.py; fitted and saved
here if missing). `Half` / `load_codec` need only jax, orbax and the codec module (no model code,
no TF); bottlenet_jax.edge needs none of them (edge.onnx in onnxruntime, the encoders in numpy).
The batch dimension is symbolic: any batch size works.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bottlenet_jax.checkpoint import read_tree, write_json, write_tree
from bottlenet_jax.codecs import make_codec, read_saved
from bottlenet_jax.errors import CheckpointError, ConfigError, DataError


def _subtree(variables, used):
    """Keep only the leaves of `variables` present in `used` (the variables one half creates)."""
    if isinstance(used, dict):
        return {k: _subtree(variables[k], v) for k, v in used.items()}
    return variables


def export_workdir(workdir: str, out: str, onnx: bool = False, transport: dict | None = None) -> dict:
    """Export the best (else latest) checkpoint of a training workdir with its codec's state; see
    export_variables. A state not yet in the workdir is fitted and saved there first (for a codec
    fitted to training data, the dataset must then be prepared). `transport`: new values of the
    codec's settings that only change how bytes are written (e.g. {"stream": "rans"} for a workdir
    saved with the range coder); the others are what the weights were trained with."""
    from bottlenet_jax.checkpoint import Checkpoints, load_config
    from bottlenet_jax.evaluation import fitted_codec_state

    cfg = load_config(workdir)
    if transport:
        allowed = make_codec(cfg.codec).transport_settings
        wrong = sorted(set(transport) - set(allowed))
        if wrong:
            raise ConfigError(
                f"--transport {wrong[0]}: not a transport setting of the {cfg.codec.name} codec "
                f"(those: {', '.join(allowed) or 'none'})"
            )
        cfg.codec.update(transport)
        make_codec(cfg.codec)  # the new values checked
    if not cfg.split.after:
        raise CheckpointError(f"{workdir}: model has no split point (split.after=0); nothing to export")
    _check_free(out)
    raw = Checkpoints(workdir).restore_raw()
    variables = {"params": raw["params"], "batch_stats": raw.get("batch_stats", {})}
    step = int(np.asarray(raw["step"]))
    state = fitted_codec_state(cfg, variables, step, workdir)
    return export_variables(cfg, variables, out, step, onnx, codec_state=state)


def _check_free(out):
    taken = [
        n
        for n in ("manifest.json", "edge_params", "cloud_params", "edge.jaxexport", "codec_state")
        if os.path.exists(os.path.join(out, n))
    ]
    if taken:
        raise CheckpointError(f"{out}: already holds an export ({taken[0]}); choose another --out or delete it first")


def export_variables(cfg, variables, out: str, step: int = 0, onnx: bool = False, codec_state=None) -> dict:
    """Write the two halves of the model `cfg` with `variables` and the codec's state to `out`;
    with `onnx`, also the edge half as ONNX (edge.onnx, via jax2onnx: `pip install '.[onnx]'`).
    `codec_state` None: computed here from the parameters, which a codec fitted to training data
    cannot do (pass `evaluation.fitted_codec_state`'s)."""
    from bottlenet_jax.models import build_model, feature_shape

    _check_free(out)
    model = build_model(cfg, bn_axis_name=None)
    codec_params = variables["params"].get("codec", {})
    if codec_state is None:
        if model.codec.fits_data:
            raise CheckpointError(
                f"codec {model.codec.name!r} is fitted to training data: export the workdir "
                "(python -m bottlenet_jax.export --workdir=...), which fits or reads its state"
            )
        codec_state = jax.tree.map(np.asarray, model.codec.fit(jax.device_get(codec_params), iter(())))
    channels = int(np.shape(jax.tree.leaves(variables["params"]["backbone"]["conv1"])[0])[2])
    x_spec = jax.ShapeDtypeStruct(
        jax.export.symbolic_shape(f"b, {cfg.image_size}, {cfg.image_size}, {channels}"), jnp.float32
    )
    fh, fw, fc = feature_shape(cfg)
    z_spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {fh}, {fw}, {fc}"), jnp.float32)
    os.makedirs(out, exist_ok=True)
    # A channel-conditioned edge (BottleNet++) takes the channel condition per sample as a 2nd input.
    conditioned = bool(
        cfg.split.unit and model.condition_encoder and model.codec.condition((1,), train=False) is not None
    )
    c_spec = jax.ShapeDtypeStruct(x_spec.shape[:1], jnp.float32)
    for part, spec in (("edge", x_spec), ("cloud", z_spec)):
        concrete = jax.ShapeDtypeStruct((1, *spec.shape[1:]), spec.dtype)
        used = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, part=part), concrete)
        sub = _subtree(variables, used)
        v_spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), sub)
        if part == "edge" and conditioned:
            fn = jax.jit(lambda v, x, c: model.apply(v, x, train=False, part="edge", condition=c))
            exp = jax.export.export(fn)(v_spec, spec, c_spec)
        else:
            fn = jax.jit(lambda v, x, part=part: model.apply(v, x, train=False, part=part))
            exp = jax.export.export(fn)(v_spec, spec)
        with open(os.path.join(out, f"{part}.jaxexport"), "wb") as f:
            f.write(exp.serialize())
        write_tree(os.path.join(out, f"{part}_params"), jax.tree.map(np.asarray, sub))
        if part == "edge" and onnx:
            _write_onnx(model, sub, x_spec.shape[1:], conditioned, os.path.join(out, "edge.onnx"))
    try:
        from bottlenet_jax.data import records

        labels = records.open_prepared(cfg.dataset, cfg.data_dir).label_names
    except DataError:  # the dataset is not on this host: labels are optional
        labels = [str(i) for i in range(cfg.model.num_classes)]
    manifest = {
        "split_after": cfg.split.after,
        "unit": bool(cfg.split.unit),
        "channels": cfg.split.channels,
        "stride": cfg.split.stride,
        "kernel": cfg.split.kernel,
        "codec": model.codec.settings(),
        "codec_state": "codec_state" if codec_state else None,
        "codec_state_npz": "codec_state.npz" if codec_state else None,  # the same arrays, for a runtime without orbax
        "codec_side_info_bytes": model.codec.side_info_bytes(codec_state) if codec_state else 0,
        "input_shape": [cfg.image_size, cfg.image_size, channels],
        "feature_shape": [fh, fw, fc],
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "model": cfg.model.to_dict(),
        "label_names": labels,
        "step": int(step),
        "edge_condition": model.codec.condition_field if conditioned else None,
        "edge_onnx": "edge.onnx" if onnx else None,
    }
    if codec_state:
        write_tree(os.path.join(out, "codec_state"), jax.tree.map(np.asarray, codec_state))
        np.savez(os.path.join(out, "codec_state.npz"), **{k: np.asarray(v) for k, v in codec_state.items()})
    write_json(os.path.join(out, "manifest.json"), manifest)
    return manifest


def _write_onnx(model, variables, input_hwc, conditioned: bool, path: str) -> None:
    """The edge half as an ONNX graph (inputs x [B,H,W,C] float32 normalised (, condition [B]);
    output z), converted from the same Flax apply by jax2onnx."""
    try:
        from jax2onnx import to_onnx
    except ImportError:
        raise CheckpointError("--onnx needs jax2onnx: pip install '.[onnx]'") from None
    if conditioned:
        fn = lambda x, c: model.apply(variables, x, train=False, part="edge", condition=c)  # noqa: E731
        inputs, names = [("B", *input_hwc), ("B",)], ["x", "condition"]
    else:
        fn = lambda x: model.apply(variables, x, train=False, part="edge")  # noqa: E731
        inputs, names = [("B", *input_hwc)], ["x"]
    proto = to_onnx(fn, inputs=inputs, model_name="bottlenet_edge", input_names=names, output_names=["z"])
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


class Half:
    """One exported half: `Half(dir, 'edge')(x)` runs it with its own parameters."""

    def __init__(self, export_dir: str, part: str):
        with open(os.path.join(export_dir, f"{part}.jaxexport"), "rb") as f:
            self.exported = jax.export.deserialize(bytearray(f.read()))
        self.variables = read_tree(os.path.join(export_dir, f"{part}_params"))
        self.conditioned = part == "edge" and load_manifest(export_dir).get("edge_condition") is not None

    def __call__(self, x, condition=None):
        """`condition`: float[batch] channel condition, for a BottleNet++ edge (manifest 'edge_condition')."""
        x = jnp.asarray(x, jnp.float32)
        if self.conditioned:
            if condition is None:
                raise ValueError("this edge half is channel-conditioned: pass condition=[sigma or p per sample]")
            return self.exported.call(
                self.variables, x, jnp.broadcast_to(jnp.asarray(condition, jnp.float32), x.shape[:1])
            )
        return self.exported.call(self.variables, x)


def load_manifest(export_dir: str) -> dict:
    with open(os.path.join(export_dir, "manifest.json")) as f:
        return json.load(f)


def load_codec(export_dir: str):
    """(codec, its state) of an export: the state from codec_state/ (arrays), or from the manifest
    of an export written before the state was kept apart (a511a13: tables as JSON lists)."""
    m = load_manifest(export_dir)
    settings, inline = read_saved(m["codec"])
    codec = make_codec(settings)
    if m.get("codec_state"):
        return codec, read_tree(os.path.join(export_dir, m["codec_state"]))
    return codec, inline


def main(argv=None):
    p = argparse.ArgumentParser(description="Export a trained workdir as edge + cloud halves.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--onnx", action="store_true", help="also write the edge half as ONNX (needs '.[onnx]')")
    p.add_argument("--dry_run", action="store_true", help="check the arguments and the workdir's config, then stop")
    p.add_argument(
        "--transport",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a codec setting that only changes how bytes are written, e.g. stream=rans (repeatable)",
    )
    a = p.parse_args(argv)
    transport = dict(kv.split("=", 1) for kv in a.transport if "=" in kv)
    if len(transport) != len(a.transport):
        sys.exit(f"error: --transport {a.transport}: each must be KEY=VALUE")
    if a.dry_run:
        from bottlenet_jax.checkpoint import load_config
        from bottlenet_jax.train_lib import validate_config

        if not os.path.exists(os.path.join(a.workdir, "config.json")):
            return print(f"dry run: arguments ok; {a.workdir} holds no trained run here, not checked")
        try:
            return print("dry run:", validate_config(load_config(a.workdir)))
        except (CheckpointError, ConfigError) as e:
            sys.exit(f"error: {e}")
    try:
        m = export_workdir(a.workdir, a.out, a.onnx, transport)
    except (CheckpointError, ConfigError) as e:
        sys.exit(f"error: {e}")
    state = f", state {m['codec_side_info_bytes']} B once" if m["codec_state"] else ""
    print(
        f"exported step {m['step']} to {a.out}: split after RB{m['split_after']}, features {m['feature_shape']}, "
        f"codec {m['codec']}{state}"
    )


if __name__ == "__main__":
    main()
