"""Train state, optimizer and the pure per-device train/eval steps (run under shard_map, axis AXIS).

The steps never look at the codec: they read whatever per-sample byte counts its stats carry.

The objective (`objective`): task loss + rate_lambda * mean bits/sample + the model's own losses.
  task: cross-entropy, or with a teacher (`distill.teacher`: a trained workdir) the Entropic
        Student's mix (1 - w) * CE + w * T^2 * KL(teacher_T || student_T), w = distill.weight,
        T = distill.temperature;
  features: with a teacher and distill.feature_weight > 0, + feature_weight * MSE between what the
        cloud half receives after the restoration unit and the teacher's own RBk features (the
        Entropic Student's first-stage "head network distillation": a dense target for the unit, where
        the task loss reaches it only through the rest of the network);
  rate: stats["rate_bits"], which codecs with a differentiable rate model report (the entropy codec);
  own losses: whatever the model sows into its "losses" collection (the entropy codec's quantile fit).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax

from bottlenet_jax import parallel
from bottlenet_jax.codecs import STAT_KEYS, STATE_COLLECTION
from bottlenet_jax.errors import ConfigError
from bottlenet_jax.parallel import AXIS, BATCH, REPLICATED


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key data, so checkpoints need no key-type handling


def learning_rate_schedule(cfg, steps_per_epoch: int, total_steps: int):
    base = cfg.learning_rate * cfg.batch_size / 256.0
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(0.0, base, max(warmup, 0), max(total_steps, warmup + 1), 0.0)


def trainable_mask(params, pattern: str):
    """True for params whose '/'-joined path matches `pattern` (re.search)."""
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    return flax.traverse_util.unflatten_dict({k: bool(re.search(pattern, k)) for k in flat}, sep="/")


def create_optimizer(cfg, params, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """SGD+Nesterov (or Adam) with decoupled L2 and warm-up + cosine; stage-1 freezing by masking;
    the codec's own parameters as the codec asks (`Codec.adam_params`, `Codec.aux_params`).

    During the first `stage1_steps` the frozen params' gradients (weight decay included) are
    multiplied by 0 before the momentum, so they neither move nor build momentum. The codec's
    parameters are a probability model, not weights: never decayed. Those it names in `adam_params`
    (a hyperprior's fixed-point networks, which the network's SGD at lr ~0.1 with momentum drives
    out of range) train with Adam at `codec_learning_rate` on the network's warm-up + cosine, as
    CompressAI and SC2 train theirs; its `aux_params` (medians, fitted by its aux loss) with Adam at
    `aux_learning_rate` and no schedule; the rest (a factorized density) with the network.
    """
    from bottlenet_jax.codecs import make_codec

    lr = learning_rate_schedule(cfg, steps_per_epoch, total_steps)
    if cfg.optimizer == "sgd":
        core = optax.sgd(lr, momentum=cfg.momentum, nesterov=True)
    elif cfg.optimizer == "adam":
        core = optax.adam(lr)
    else:
        raise ConfigError(f"optimizer={cfg.optimizer!r}: must be sgd or adam")
    gate = []
    if cfg.stage1_steps > 0:
        stage1 = int(cfg.stage1_steps)
        frozen = jax.tree.map(lambda t: not t, trainable_mask(params, cfg.stage1_trainable))
        scale = optax.scale_by_schedule(lambda count: (count >= stage1).astype(jnp.float32))
        gate = [optax.masked(scale, frozen)]
    decay = [optax.add_decayed_weights(cfg.weight_decay)] if cfg.weight_decay else []
    if decay and "codec" in params:  # (masked only then: a checkpoint's optimizer state keeps its structure)
        decay = [optax.masked(decay[0], {k: k != "codec" for k in params})]
    main = optax.chain(*decay, *gate, core)
    codec = make_codec(cfg.codec) if cfg.get("split", {}).get("after") else None
    own = {"aux": set(codec.aux_params), "codec": set(codec.adam_params)} if codec else {}
    if not any(k in names for names in own.values() for k in params.get("codec", {})):
        return main
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    codec_lr = optax.warmup_cosine_decay_schedule(
        0.0, cfg.get("codec_learning_rate", 1e-3), max(warmup, 0), max(total_steps, warmup + 1), 0.0
    )
    label = lambda k: next((g for g, names in own.items() if k in names), "main")  # noqa: E731
    labels = {k: jax.tree.map(lambda _: "main", v) for k, v in params.items()}
    labels["codec"] = {k: jax.tree.map(lambda _, k=k: label(k), v) for k, v in params["codec"].items()}
    groups = {
        "main": main,
        "codec": optax.chain(*gate, optax.adam(codec_lr)),
        "aux": optax.adam(cfg.get("aux_learning_rate", 1e-2)),
    }
    return optax.multi_transform(groups, labels)


def cross_entropy(logits, labels, num_classes):
    return optax.softmax_cross_entropy(logits, jax.nn.one_hot(labels, num_classes))


def normalize(images, mean, std):
    """uint8 pixels from the loader -> the model's standardised float32 input (done on the device,
    so batches cross from the host as uint8)."""
    images = jnp.asarray(images)
    return (images.astype(jnp.float32) / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _device_rng(state, salt: int):
    key = jax.random.wrap_key_data(state.rng)
    key = jax.random.fold_in(jax.random.fold_in(key, state.step), salt)
    return jax.random.fold_in(key, lax.axis_index(AXIS))


@struct.dataclass
class Objective:
    """The loss's weights (config keys rate_lambda, distill.*); see the module docstring."""

    rate_lambda: float = 0.0
    distill_weight: float = 0.0
    temperature: float = 1.0
    feature_weight: float = 0.0

    @classmethod
    def from_config(cls, cfg, teacher: bool = False):
        d = cfg.get("distill") or {}
        return cls(
            float(cfg.get("rate_lambda", 0.0)),
            float(d.get("weight", 0.5)) if teacher else 0.0,
            float(d.get("temperature", 1.0)),
            float(d.get("feature_weight", 0.0)) if teacher else 0.0,
        )


def distillation(logits, teacher_logits, temperature: float):
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)) per sample (Hinton et al.)."""
    t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature)
    s = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature)
    return temperature**2 * jnp.sum(jnp.exp(t) * (t - s), axis=-1)


def objective(obj: Objective, logits, labels, stats, own_losses, teacher_logits=None, features=None):
    """(this device's loss, its parts) for a slice; see the module docstring. `features`: (the
    student's restored features, the teacher's) when obj.feature_weight > 0."""
    ce = jnp.mean(cross_entropy(logits, labels, logits.shape[-1]))
    parts = {"ce": ce}
    task = ce
    if teacher_logits is not None:
        parts["kd"] = jnp.mean(distillation(logits, teacher_logits, obj.temperature))
        task = (1.0 - obj.distill_weight) * ce + obj.distill_weight * parts["kd"]
    loss = task
    if obj.feature_weight:
        mine, theirs = features
        if mine.shape != theirs.shape:
            raise ConfigError(
                f"distill.feature_weight: the restored features are {mine.shape[1:]}, the teacher's "
                f"{theirs.shape[1:]} (the teacher must have this model's backbone up to the split)"
            )
        parts["feature"] = jnp.mean(jnp.square(mine.astype(jnp.float32) - theirs.astype(jnp.float32)))
        loss = loss + obj.feature_weight * parts["feature"]
    if obj.rate_lambda:
        loss = loss + obj.rate_lambda * jnp.mean(stats["rate_bits"])
    own = jax.tree.leaves(own_losses)
    if own:
        parts["own_losses"] = sum(jnp.sum(v) for v in own)
        loss = loss + parts["own_losses"]
    return loss, parts


def _teacher_outputs(model, images, k: int):
    """(logits, RBk features) of a teacher in eval mode. A plain teacher's backbone runs up to RBk and
    on from there (one pass); a split teacher's logits need its own unit and codec, so it runs twice.
    Needs k >= 1 (feature distillation is refused without a split, and start=0 would rerun the stem)."""
    z = model.backbone(images, False, stop=k)
    if model.split_after:
        return model(images, False)[0], z
    return model.backbone(z, False, start=k), z


def train_step(state: TrainState, batch, teacher_vars=None, *, model, tx, mean, std, objective_=None, teacher=None):
    """One SGD step on this device's slice; the loss is the pmean over the mesh, so its gradient
    w.r.t. the replicated params is the global-batch gradient (and BN uses global statistics).
    `teacher` (a model) with `teacher_vars` (its variables, replicated): distillation targets."""
    obj = objective_ or Objective()
    images = normalize(batch["image"], mean, std)
    t_logits = t_features = None
    if teacher is not None:
        if obj.feature_weight:
            out = teacher.apply(teacher_vars, images, model.split_after, method=_teacher_outputs)
            t_logits, t_features = lax.stop_gradient(out)
        else:
            t_logits = lax.stop_gradient(teacher.apply(teacher_vars, images, train=False)[0])
    collections = ["batch_stats", "losses"] + (["intermediates"] if obj.feature_weight else [])

    def loss_fn(params):
        (logits, stats), new_vars = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            rngs={"codec": _device_rng(state, 0)},
            mutable=collections,
        )
        features = None
        if obj.feature_weight:
            features = (new_vars["intermediates"]["restored"][0], t_features)
        loss, parts = objective(obj, logits, batch["label"], stats, new_vars.get("losses", {}), t_logits, features)
        return lax.pmean(loss, AXIS), (logits, stats, parts, new_vars["batch_stats"])

    (loss, (logits, stats, parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "accuracy": lax.pmean(jnp.mean(jnp.argmax(logits, -1) == batch["label"]), AXIS)}
    if len(parts) > 1:
        metrics.update({k: lax.pmean(v, AXIS) for k, v in parts.items()})
    for k, v in stats.items():
        metrics[k] = lax.pmean(jnp.mean(v.astype(jnp.float32)), AXIS)
    new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return new, metrics


def eval_step(state: TrainState, batch, codec_state, *, model, mean, std):
    """Per-sample results (sharded like the batch): correct@1, correct@5, byte counts, mask.
    `codec_state`: the codec's fitted state (replicated; {}: not fitted, e.g. during training)."""
    rng = _device_rng(state, 1)
    if "index" in batch:  # a fresh channel-noise draw per eval batch, reproducible run to run
        rng = jax.random.fold_in(rng, batch["index"][0])
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    if codec_state:
        variables[STATE_COLLECTION] = {"codec": codec_state}
    logits, stats = model.apply(
        variables,
        normalize(batch["image"], mean, std),
        train=False,
        rngs={"codec": rng},
    )
    top5 = lax.top_k(logits, min(5, logits.shape[-1]))[1]
    label = batch["label"]
    out = {
        "top1": (top5[:, 0] == label),
        "top5": jnp.any(top5 == label[:, None], axis=-1),
        "loss": cross_entropy(logits, label, logits.shape[-1]),
        "mask": batch["mask"],
    }
    out.update({k: batch[k] for k in STAT_KEYS if k in batch})  # counted before the model (input-image reference)
    out.update(stats)
    return out


def check_batch(cfg, mesh):
    for name in ("batch_size", "eval_batch_size"):
        b = cfg[name]
        if b <= 0 or b % mesh.size:
            raise ConfigError(f"{name}={b}: must be a positive multiple of the device count ({mesh.size})")


def compile_steps(model, tx, mesh, cfg, teacher=None):
    """The data-parallel train and eval steps; they take uint8 batches and normalise with cfg.mean/std.
    `teacher`: (model, variables) to distil from; its variables are an argument of the compiled
    step (replicated once here), not constants baked into it."""
    norm = dict(mean=tuple(cfg.mean), std=tuple(cfg.std))
    obj = Objective.from_config(cfg, teacher is not None)
    if obj.rate_lambda and not model.codec.differentiable_rate:
        raise ConfigError(
            f"rate_lambda={obj.rate_lambda}: codec {model.codec.name!r} has no differentiable rate "
            f"(use codec.name=entropy, or rate_lambda=0)"
        )
    step = functools.partial(train_step, model=model, tx=tx, objective_=obj, **norm)
    if teacher is None:
        p_train = parallel.data_parallel(step, mesh, (REPLICATED, BATCH), (REPLICATED, REPLICATED), donate_argnums=(0,))
    else:
        t_model, t_vars = teacher
        t_vars = parallel.replicate(t_vars, mesh)
        with_teacher = parallel.data_parallel(
            functools.partial(step, teacher=t_model),
            mesh,
            (REPLICATED, BATCH, REPLICATED),
            (REPLICATED, REPLICATED),
            donate_argnums=(0,),
        )
        p_train = lambda state, batch: with_teacher(state, batch, t_vars)
    evaluate = parallel.data_parallel(
        functools.partial(eval_step, model=model, **norm), mesh, (REPLICATED, BATCH, REPLICATED), BATCH
    )

    def p_eval(state, batch, codec_state=None):
        return evaluate(state, batch, codec_state or {})

    return p_train, p_eval
