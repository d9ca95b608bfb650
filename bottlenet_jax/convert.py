"""Import torchvision ResNet weights (a `state_dict` .pth, or an .npz of it for users without torch).

    python -m bottlenet_jax.convert resnet50.pth resnet50.npz   # once, where torch is installed
    python train.py ... --config.init_from=resnet50.npz         # anywhere

Our module names follow torchvision's, so the mapping is a rename plus layout changes:
conv [O,I,kh,kw] -> kernel [kh,kw,I,O]; fc [O,I] -> kernel [I,O]; BN weight/bias -> scale/bias
(params), running_mean/var -> mean/var (batch_stats). Verified against a torch forward pass in
tests/test_convert.py (max |logit diff| <= 1e-4).
"""

from __future__ import annotations

import re
import sys

import numpy as np

from bottlenet_jax.errors import CheckpointError

_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.(.+)$")


def _set(tree, path, value):
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading .pth needs torch (pip install 'bottlenet-jax[torch]'), "
            "or convert it to .npz where torch is installed"
        ) from None
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def state_dict_to_flax(sd: dict[str, np.ndarray]):
    """torchvision ResNet state_dict -> (params, batch_stats) for `ResNet` (the backbone)."""
    params, stats = {}, {}
    for name, value in sd.items():
        if name.endswith("num_batches_tracked"):
            continue
        mod, leaf = name.rsplit(".", 1)
        m = _BLOCK.match(mod)
        if m:
            stage, idx, rest = m.groups()
            rest = rest.replace("downsample.0", "downsample_conv").replace("downsample.1", "downsample_bn")
            path = [f"layer{stage}_{idx}", rest]
        elif mod in ("conv1", "bn1", "fc"):
            path = [mod]
        else:
            raise CheckpointError(f"unexpected key {name!r}: not a torchvision ResNet state_dict")
        kind = path[-1]
        if kind.startswith("conv") or kind == "downsample_conv":
            _set(params, path + ["kernel"], np.transpose(value, (2, 3, 1, 0)))
        elif kind == "fc":
            _set(params, path + ["kernel" if leaf == "weight" else "bias"], value.T if leaf == "weight" else value)
        else:  # batch norm
            target, key = {
                "weight": (params, "scale"),
                "bias": (params, "bias"),
                "running_mean": (stats, "mean"),
                "running_var": (stats, "var"),
            }[leaf]
            _set(target, path + [key], value)
    return params, stats


def load_torchvision(path: str):
    try:
        return state_dict_to_flax(read_state_dict(path))
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description="torchvision ResNet weights (.pth) -> .npz (no torch needed to load it)")
    p.add_argument("pth")
    p.add_argument("npz")
    p.add_argument("--dry_run", action="store_true", help="check the arguments, then stop")
    a = p.parse_args(argv)
    if not a.npz.endswith(".npz"):
        p.error(f"{a.npz}: the output must be a .npz file")
    if a.dry_run:
        return print(f"dry run: arguments ok ({a.pth} -> {a.npz})")
    try:
        np.savez(a.npz, **read_state_dict(a.pth))
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {a.npz}")


if __name__ == "__main__":
    main()
