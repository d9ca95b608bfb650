"""The training loop around the pure steps in `steps.py` (Flax ImageNet-example style): state set-up
and resume here, the periodic work (logging, evaluation, checkpoints) as small actions in `actions.py`."""

from __future__ import annotations

import functools
import os

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from bottlenet_jax import actions, parallel
from bottlenet_jax.checkpoint import Checkpoints, write_json
from bottlenet_jax.codecs import make_codec
from bottlenet_jax.errors import CheckpointError, DataError
from bottlenet_jax.evaluation import evaluate, fitted_codec_state
from bottlenet_jax.models import build_model
from bottlenet_jax.steps import TrainState, check_batch, compile_steps, create_optimizer


def create_train_state(cfg, model, input_channels: int, steps_per_epoch: int, total_steps: int):
    """A fresh TrainState from cfg.seed, built by one program compiled without backend optimisation.

    It runs once, so its speed is irrelevant, but compiling it is not: the ~60 inlined threefry
    calls of model.init compile several times faster at level 0, and building the optimizer state
    eagerly would add one small compile per leaf shape.
    """
    dummy = jax.ShapeDtypeStruct((1, cfg.image_size, cfg.image_size, input_channels), jnp.float32)
    init = functools.partial(model.init, train=False)

    def keys(key):  # channel codecs draw their noise even at init
        return {"params": key, "codec": jax.random.fold_in(key, 2)}

    shapes = jax.eval_shape(init, keys(jax.random.key(0)), dummy)["params"]
    tx = create_optimizer(cfg, shapes, steps_per_epoch, total_steps)  # reads only the tree's structure

    def fresh(seed):
        key = jax.random.key(seed)
        variables = init(keys(key), jnp.zeros(dummy.shape, dummy.dtype))
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            rng=jax.random.key_data(jax.random.fold_in(key, 1)),
        )

    program = jax.jit(fresh).lower(jnp.int32(cfg.seed))
    return program.compile(compiler_options={"xla_backend_optimization_level": 0})(jnp.int32(cfg.seed)), tx


def merge_pretrained(state: TrainState, params, batch_stats, source: str) -> TrainState:
    """Copy every leaf whose path and shape match; report what was and was not taken."""

    def merge(dst, src):
        fd, fs = flax.traverse_util.flatten_dict(dst), flax.traverse_util.flatten_dict(src)
        hit = {k: jnp.asarray(fs[k], fd[k].dtype) for k in fd if k in fs and np.shape(fs[k]) == fd[k].shape}
        return flax.traverse_util.unflatten_dict({**fd, **hit}), len(hit), len(fd)

    p, np_, tp = merge(state.params, params)
    b, nb, tb = merge(state.batch_stats, batch_stats)
    if np_ == 0:
        raise CheckpointError(f"init_from={source}: no parameter matches this model (wrong depth/width?)")
    logging.info(
        "init_from %s: %d/%d params, %d/%d BN statistics loaded (the rest, e.g. the bottleneck unit or a "
        "resized head, start fresh)",
        source,
        np_,
        tp,
        nb,
        tb,
    )
    return state.replace(params=p, batch_stats=b)


def load_init(cfg, state: TrainState) -> TrainState:
    src = cfg.init_from
    if not src:
        return state
    if src.endswith((".pth", ".pt", ".npz")):
        from bottlenet_jax.convert import load_torchvision

        params, stats = load_torchvision(src)
        return merge_pretrained(state, {"backbone": params}, {"backbone": stats}, src)
    if not os.path.isdir(src):
        raise CheckpointError(f"init_from={src}: not a .pth/.npz file or a workdir")
    restored = Checkpoints(src).restore_raw()
    return merge_pretrained(state, restored["params"], restored.get("batch_stats", {}), src)


def final_test(ckpt, template, state, data, cfg, mesh, p_eval, last_step: int) -> dict:
    """eval_split, once, on the checkpoint with the best validation top-1 (else the last state), with
    the codec's state fitted for it first (`evaluation.fitted_codec_state`: saved in the workdir,
    where eval.py and the exporter read it)."""
    best, meta = ckpt.restore(template, which="best") if cfg.validation_split else (None, None)
    if best is None:
        chosen = {"step": last_step, "checkpoint": "last"}
    else:
        state = parallel.replicate(best, mesh)
        chosen = {
            "step": meta["step"],
            "checkpoint": f"best validation top-1 ({cfg.validation_split})",
            "validation_top1": meta["metrics"]["top1"],
        }
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    codec_state = fitted_codec_state(cfg, variables, chosen["step"], ckpt.root, data)
    codec = make_codec(cfg.codec)
    if codec_state and codec.fits_data:
        chosen["codec_fitted_on"] = cfg.train_split
    summary = evaluate(p_eval, state, data, cfg, mesh, codec_state=codec_state)
    side = {"side_info_bytes": codec.side_info_bytes(codec_state)} if codec_state else {}
    return {**chosen, "split": cfg.eval_split, **summary, **side}


def load_teacher(cfg):
    """(teacher model, its variables) for `distill.teacher`, or None. The teacher is a trained
    workdir of ours, or torchvision ResNet weights (.pth/.pt/.npz) for this config's plain backbone."""
    src = (cfg.get("distill") or {}).get("teacher", "")
    if not src:
        return None
    from bottlenet_jax.checkpoint import load_config

    if src.endswith((".pth", ".pt", ".npz")):
        from bottlenet_jax.codecs import codec_settings
        from bottlenet_jax.convert import load_torchvision

        tcfg = ml_collections.ConfigDict(cfg.to_dict())
        tcfg.split.update(after=0, unit=False)
        tcfg.codec = ml_collections.ConfigDict(codec_settings("identity"))
        params, stats = load_torchvision(src)
        return build_model(tcfg), {"params": {"backbone": params}, "batch_stats": {"backbone": stats}}
    tcfg = load_config(src)
    for key in ("image_size", "mean", "std"):
        if tuple(np.ravel(tcfg[key])) != tuple(np.ravel(cfg[key])):
            raise CheckpointError(f"distill.teacher={src}: its {key}={tcfg[key]} differs from this run's {cfg[key]}")
    if tcfg.model.num_classes != cfg.model.num_classes:
        raise CheckpointError(
            f"distill.teacher={src}: {tcfg.model.num_classes} classes, this model has {cfg.model.num_classes}"
        )
    raw = Checkpoints(src).restore_raw()
    return build_model(tcfg), {"params": raw["params"], "batch_stats": raw.get("batch_stats", {})}


def open_dataset(cfg, prepare_if_missing: bool = True):
    """The config's prepared dataset; a missing one is prepared here first when TFDS is installed
    (the one place training may import TensorFlow), else the error says how."""
    from bottlenet_jax.data import records

    def prepare(name, data_dir):
        try:
            from bottlenet_jax.data import prepare as tfds_prepare
        except ImportError:
            root = records.records_dir(name, data_dir)
            raise DataError(
                f"dataset={name!r} is not prepared in {root} and TensorFlow/TFDS are not installed "
                f"here: run `pip install -e '.[data]'` and `{records.prepare_command(name, data_dir)}` "
                f"(on any machine; then copy {root} here)"
            ) from None
        tfds_prepare.prepare(name, data_dir)

    return records.open_prepared(cfg.dataset, cfg.data_dir, prepare if prepare_if_missing else None)


def validate_config(cfg) -> str:
    """Every check that needs no data and no compile: the model and codec (build_model), the
    objective, the step intervals, the optimizer. A ConfigError names the first problem; else a
    one-line description of the run."""
    from bottlenet_jax.errors import ConfigError
    from bottlenet_jax.models import feature_shape

    model = build_model(cfg)
    for key in ("log_every_steps", "checkpoint_every_steps"):
        if cfg[key] <= 0:
            raise ConfigError(f"{key}={cfg[key]}: must be > 0")
    if cfg.eval_every_steps == 0 or cfg.eval_every_steps < -1:
        raise ConfigError(f"eval_every_steps={cfg.eval_every_steps}: must be > 0, or -1 (once per epoch)")
    if cfg.optimizer not in ("sgd", "adam"):
        raise ConfigError(f"optimizer={cfg.optimizer!r}: must be sgd or adam")
    for name in ("batch_size", "eval_batch_size"):
        if cfg[name] <= 0:
            raise ConfigError(f"{name}={cfg[name]}: must be > 0")
    q = tuple(cfg.get("train_input_jpeg", ()))
    if q and not (len(q) == 2 and 1 <= q[0] <= q[1] <= 100):
        raise ConfigError(f"train_input_jpeg={q}: must be () or (lo, hi) with 1 <= lo <= hi <= 100")
    if cfg.get("train_input_format", "jpeg") not in ("jpeg", "webp"):
        raise ConfigError(f"train_input_format={cfg.train_input_format!r}: must be jpeg or webp")
    if cfg.num_train_steps <= 0 and cfg.num_epochs <= 0:
        raise ConfigError(f"num_epochs={cfg.num_epochs}, num_train_steps={cfg.num_train_steps}: one must be > 0")
    rate = float(cfg.get("rate_lambda", 0.0))
    if rate < 0 or (rate and not model.codec.differentiable_rate):
        raise ConfigError(
            f"rate_lambda={rate}: must be >= 0, and > 0 only with a codec that has a rate model (codec.name=entropy)"
        )
    d = cfg.get("distill") or {}
    if d.get("teacher") and not (0 <= d.get("weight", 0.5) <= 1 and d.get("temperature", 1.0) > 0):
        raise ConfigError(
            f"distill.weight={d.get('weight')}, distill.temperature={d.get('temperature')}: need 0..1, > 0"
        )
    fw = d.get("feature_weight", 0.0)  # like distill.weight, inert without a teacher
    if fw < 0 or (fw and d.get("teacher") and not cfg.split.after):
        raise ConfigError(f"distill.feature_weight={fw}: must be >= 0, and 0 for a model without a split")
    split = f"split after RB{cfg.split.after}, features {list(feature_shape(cfg))}" if cfg.split.after else "no split"
    return (
        f"config ok: ResNet-{cfg.model.depth} width {cfg.model.width}, {split}, codec {model.codec.name}, "
        f"dataset {cfg.dataset} ({cfg.train_split} / {cfg.validation_split or '-'} / {cfg.eval_split})"
    )


def config_changes(saved: dict, cfg: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ between a workdir's saved config and this one (keys the saved
    one lacks, written before they existed, are not changes)."""
    out = []
    for k, v in saved.items():
        key = prefix + k
        if k not in cfg:
            out.append(key)
        elif isinstance(v, dict) and isinstance(cfg[k], dict):
            out += config_changes(v, cfg[k], key + ".")
        elif json_form(v) != json_form(cfg[k]):
            out.append(key)
    return out


def json_form(v):
    import json

    return json.loads(json.dumps(v, default=str))


def train_and_evaluate(cfg, workdir: str, accept_config_changes: bool = False) -> dict:
    """Train (resuming from workdir if it holds checkpoints), then evaluate eval_split once; returns that summary."""
    return train(cfg, workdir, accept_config_changes)[1]


def check_resume(cfg, workdir: str, accept: bool) -> None:
    """Refuse to continue a workdir under a different config (one line naming the keys) unless
    `accept`; then the new config replaces the saved one, as it does when it only adds keys."""
    import json

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    new = json_form(cfg.to_dict())
    changed = config_changes(saved, new)
    if changed and not accept:
        from bottlenet_jax.errors import ConfigError

        raise ConfigError(
            f"--workdir={workdir} was started with another config (differs in: {', '.join(changed[:8])}"
            f"{' ...' if len(changed) > 8 else ''}); use a new workdir, or --accept_config_changes to continue it"
        )
    # keys added since the workdir was started (a newer version's) are written in too, so that
    # eval.py and the exporter, which read config.json, see the settings this run used
    if (changed or config_changes(new, saved)) and jax.process_index() == 0:
        write_json(path, cfg.to_dict())


def train(cfg, workdir: str, accept_config_changes: bool = False):
    """As train_and_evaluate, returning (final replicated TrainState, the test summary).

    Periodic evaluations run on `validation_split` (held out from the training data) and pick the
    "best" checkpoint; `eval_split` (the test split) is evaluated once, at the end, with that
    checkpoint, so no reported test figure was used for selection. Without a validation split the
    periodic evaluations are for monitoring only and the last checkpoint is the one reported."""
    parallel.maybe_initialize_distributed()
    validate_config(cfg)  # config errors surface before any data or compile work
    model = build_model(cfg)
    check_resume(cfg, workdir, accept_config_changes)
    mesh = parallel.make_mesh()
    check_batch(cfg, mesh)
    ckpt = Checkpoints(workdir, cfg.keep_checkpoints)
    from bottlenet_jax.data import loader

    data = open_dataset(cfg, prepare_if_missing=jax.process_count() == 1)  # processes must not all write it
    steps_per_epoch = max(1, data.num_examples(cfg.train_split) // cfg.batch_size)
    total = cfg.num_train_steps if cfg.num_train_steps > 0 else int(cfg.num_epochs * steps_per_epoch)
    eval_every = cfg.eval_every_steps if cfg.eval_every_steps > 0 else steps_per_epoch
    channels = data.channels

    fresh, tx = create_train_state(cfg, model, channels, steps_per_epoch, total)
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh)  # fresh may be donated
    state, meta = ckpt.restore(fresh)
    if state is None:
        state = load_init(cfg, fresh)
        if not os.path.exists(os.path.join(workdir, "config.json")):
            write_json(os.path.join(workdir, "config.json"), cfg.to_dict())
    start = int(state.step)
    if start:
        logging.info("resumed from %s/checkpoints/%d (examples consumed: %d)", ckpt.root, start, meta["examples_seen"])
    state = parallel.replicate(state, mesh)
    p_train, p_eval = compile_steps(model, tx, mesh, cfg, teacher=load_teacher(cfg))
    writer, bar = actions.Writer(workdir), actions.ProgressBar(steps_per_epoch, total)

    def meta(step):  # what a checkpoint records besides the state: the data position and the config
        return {"step": step, "examples_seen": step * cfg.batch_size, "config": cfg.to_dict()}

    eval_due = actions.every(eval_every, total)
    periodic = [
        bar,
        actions.TrainMetrics(actions.every(cfg.log_every_steps, total), cfg.batch_size, bar, writer),
        actions.PeriodicEval(
            eval_due,
            lambda st, split: evaluate(p_eval, st, data, cfg, mesh, split),
            cfg.validation_split or cfg.eval_split,
            bool(cfg.validation_split),
            ckpt,
            meta,
            workdir,
            bar,
            writer,
        ),
        actions.Checkpoint(actions.every(cfg.checkpoint_every_steps, -1), ckpt, meta, unless=eval_due),
    ]
    train_it = loader.train_iterator(data, cfg, start)
    for step in range(start + 1, total + 1):
        state, metrics = p_train(state, parallel.shard_batch(next(train_it), mesh))
        for action in periodic:
            action(step, state, metrics)
    bar.close()
    train_it.close()
    ckpt.wait()
    summary = final_test(ckpt, template, state, data, cfg, mesh, p_eval, total)
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "test.json"), summary)
    logging.info("test: %s", actions.fmt(summary))
    ckpt.close()
    writer.close()
    return state, summary
