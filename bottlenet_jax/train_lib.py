"""The training / evaluation loop around the pure steps in `steps.py` (Flax ImageNet-example style)."""
from __future__ import annotations

import functools
import os
import signal
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from bottlenet_jax import parallel
from bottlenet_jax.checkpoint import Checkpoints, CheckpointError, write_json
from bottlenet_jax.codecs import STAT_KEYS, ConfigError
from bottlenet_jax.models import build_model
from bottlenet_jax.parallel import BATCH, REPLICATED
from bottlenet_jax.steps import TrainState, create_optimizer, eval_step, train_step


def create_train_state(cfg, model, input_channels: int, steps_per_epoch: int, total_steps: int):
    """A fresh TrainState from cfg.seed, built by one program compiled without backend optimisation.

    It runs once, so its speed is irrelevant, but compiling it is not: the ~60 inlined threefry
    calls of model.init took 11.6 s at the default level vs 4.3 s at level 0 (ResNet-50 layout,
    2 CPU cores), and building the optimizer state eagerly added one small compile per leaf shape.
    """
    dummy = jax.ShapeDtypeStruct((1, cfg.image_size, cfg.image_size, input_channels), jnp.float32)
    init = functools.partial(model.init, train=False)
    shapes = jax.eval_shape(init, {"params": jax.random.key(0)}, dummy)["params"]
    tx = create_optimizer(cfg, shapes, steps_per_epoch, total_steps)  # reads only the tree's structure

    def fresh(seed):
        key = jax.random.key(seed)
        variables = init({"params": key}, jnp.zeros(dummy.shape, dummy.dtype))
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                          opt_state=tx.init(params), rng=jax.random.key_data(jax.random.fold_in(key, 1)))

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
    print(f"init_from {source}: {np_}/{tp} params, {nb}/{tb} BN statistics loaded "
          f"(the rest, e.g. the bottleneck unit or a resized head, start fresh)")
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


def summarize_eval(parts: list[dict]) -> dict:
    """Per-sample eval outputs -> top-1/top-5/loss and mean/median/p95 of each byte count."""
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    m = cat.pop("mask").astype(bool)
    out = {"examples": int(m.sum()), "top1": float(cat["top1"][m].mean()), "top5": float(cat["top5"][m].mean()),
           "loss": float(cat["loss"][m].mean())}
    for k in STAT_KEYS:
        if k in cat:
            v = cat[k][m].astype(np.float64)
            out.update({f"{k}_mean": float(v.mean()), f"{k}_median": float(np.median(v)),
                        f"{k}_p95": float(np.percentile(v, 95))})
    return out


def evaluate(p_eval, state, data, cfg, mesh, split: str | None = None) -> dict:
    """Summary over `split` (default cfg.eval_split)."""
    from bottlenet_jax.data import loader
    parts = [{k: parallel.to_host(v) for k, v in p_eval(state, parallel.shard_batch(b, mesh)).items()}
             for b in loader.eval_iterator(data, cfg, split=split)]
    if not parts:
        raise ConfigError(f"split={split or cfg.eval_split!r} gave no examples")
    return summarize_eval(parts)


def window_mean(window: list[dict]) -> dict:
    """Mean of each train metric over a logging window."""
    return {k: float(np.mean([jax.device_get(w[k]) for w in window], dtype=np.float64)) for k in window[0]}


def check_batch(cfg, mesh):
    for name in ("batch_size", "eval_batch_size"):
        b = cfg[name]
        if b <= 0 or b % mesh.size:
            raise ConfigError(f"{name}={b}: must be a positive multiple of the device count ({mesh.size})")


def compile_steps(model, tx, mesh, cfg):
    """The data-parallel train and eval steps; they take uint8 batches and normalise with cfg.mean/std."""
    norm = dict(mean=tuple(cfg.mean), std=tuple(cfg.std))
    p_train = parallel.data_parallel(functools.partial(train_step, model=model, tx=tx, **norm), mesh,
                                     (REPLICATED, BATCH), (REPLICATED, REPLICATED), donate_argnums=(0,))
    p_eval = parallel.data_parallel(functools.partial(eval_step, model=model, **norm), mesh,
                                    (REPLICATED, BATCH), BATCH)
    return p_train, p_eval


def final_test(ckpt, template, state, data, cfg, mesh, p_eval, last_step: int) -> dict:
    """eval_split, once, on the checkpoint with the best validation top-1 (else the last state)."""
    best, meta = ckpt.restore(template, which="best") if cfg.validation_split else (None, None)
    if best is None:
        chosen = {"step": last_step, "checkpoint": "last"}
    else:
        state = parallel.replicate(best, mesh)
        chosen = {"step": meta["step"], "checkpoint": f"best validation top-1 ({cfg.validation_split})",
                  "validation_top1": meta["metrics"]["top1"]}
    return {**chosen, "split": cfg.eval_split, **evaluate(p_eval, state, data, cfg, mesh)}


def _writer(workdir):
    if jax.process_index() != 0:
        return None
    from tensorboardX import SummaryWriter
    return SummaryWriter(os.path.join(workdir, "tensorboard"))


def train_and_evaluate(cfg, workdir: str) -> dict:
    """Train (resuming from workdir if it holds checkpoints), then evaluate eval_split once; returns that summary."""
    return train(cfg, workdir)[1]


def train(cfg, workdir: str):
    """As train_and_evaluate, returning (final replicated TrainState, the test summary).

    Periodic evaluations run on `validation_split` (held out from the training data) and pick the
    "best" checkpoint; `eval_split` (the test split) is evaluated once, at the end, with that
    checkpoint, so no reported test figure was used for selection. Without a validation split the
    periodic evaluations are for monitoring only and the last checkpoint is the one reported."""
    parallel.maybe_initialize_distributed()
    model = build_model(cfg)  # config errors surface before any data or compile work
    mesh = parallel.make_mesh()
    check_batch(cfg, mesh)
    ckpt = Checkpoints(workdir, cfg.keep_checkpoints)
    from bottlenet_jax.data import loader, records
    data = records.open_prepared(cfg.dataset, cfg.data_dir, prepare_if_missing=jax.process_count() == 1)
    steps_per_epoch = max(1, data.num_examples(cfg.train_split) // cfg.batch_size)
    total = cfg.num_train_steps if cfg.num_train_steps > 0 else int(cfg.num_epochs * steps_per_epoch)
    eval_every = cfg.eval_every_steps if cfg.eval_every_steps > 0 else steps_per_epoch
    channels = data.channels
    periodic_split = cfg.validation_split or cfg.eval_split

    fresh, tx = create_train_state(cfg, model, channels, steps_per_epoch, total)
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh)  # fresh may be donated
    state, meta = ckpt.restore(fresh)
    if state is None:
        state = load_init(cfg, fresh)
        if not os.path.exists(os.path.join(workdir, "config.json")):
            write_json(os.path.join(workdir, "config.json"), cfg.to_dict())
    start = int(state.step)
    if start:
        print(f"resumed from {ckpt.root}/checkpoints/{start} (examples consumed: {meta['examples_seen']})")
    state = parallel.replicate(state, mesh)
    p_train, p_eval = compile_steps(model, tx, mesh, cfg)
    writer = _writer(workdir)
    train_it = loader.train_iterator(data, cfg, start)
    summary, window, t0 = {}, [], time.perf_counter()
    bar = None
    for step in range(start + 1, total + 1):
        if bar is None:
            epoch = (step - 1) // steps_per_epoch
            bar = tqdm(total=min(steps_per_epoch, total - epoch * steps_per_epoch), initial=(step - 1) % steps_per_epoch,
                       desc=f"epoch {epoch + 1}", unit="step", disable=jax.process_index() != 0, dynamic_ncols=True)
        state, metrics = p_train(state, parallel.shard_batch(next(train_it), mesh))
        window.append(metrics)
        bar.update(1)
        if step % cfg.log_every_steps == 0 or step == total:
            m = window_mean(window)
            dt = time.perf_counter() - t0
            m["img_per_s"] = len(window) * cfg.batch_size / dt
            bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['accuracy']:.3f}", img_s=f"{m['img_per_s']:.0f}",
                            **({"B": f"{m['bytes_payload']:.0f}"} if "bytes_payload" in m else {}))
            if writer:
                for k, v in m.items():
                    writer.add_scalar(f"train/{k}", v, step)
            window, t0 = [], time.perf_counter()
        meta = {"step": step, "examples_seen": step * cfg.batch_size, "config": cfg.to_dict()}
        if step % eval_every == 0 or step == total:
            s = {"step": step, "split": periodic_split, **evaluate(p_eval, state, data, cfg, mesh, periodic_split)}
            bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items()))
            if writer:
                for k, v in s.items():
                    if not isinstance(v, str):
                        writer.add_scalar(f"{'validation' if cfg.validation_split else 'eval'}/{k}", v, step)
            if jax.process_index() == 0:
                write_json(os.path.join(workdir, f"eval_step_{step}.json"), s)
            ckpt.save(state, meta, metrics={"top1": s["top1"]} if cfg.validation_split else None)
        elif step % cfg.checkpoint_every_steps == 0:
            ckpt.save(state, meta)
        if step == cfg.debug_kill_after_checkpoint_step:
            ckpt.wait()
            os.kill(os.getpid(), signal.SIGKILL)
        if step % steps_per_epoch == 0:
            bar.close()
            bar = None
    if bar is not None:
        bar.close()
    train_it.close()
    ckpt.wait()
    summary = final_test(ckpt, template, state, data, cfg, mesh, p_eval, total)
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "test.json"), summary)
    print("test:", " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    ckpt.close()
    if writer:
        writer.close()
    return state, summary
