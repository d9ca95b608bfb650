"""Shared entry-point plumbing: config files with `--config.KEY=VALUE` overrides, one-line errors.

Every entry point (train.py, eval.py, the demo, the experiments) overrides config values the same
way: `--config.KEY=VALUE` arguments, applied by `apply_overrides`:
  * the value is parsed as the type the key already holds: bool (true/false/1/0/yes/no), int,
    float, str, and tuples/lists element by element from "a,b,c" (brackets optional), each element
    as the type of the default's elements;
  * `--config.codec.name=NAME` swaps in that codec's own block at its defaults (each codec owns its
    settings), before any `--config.codec.SETTING=...` on the same line is applied on top;
  * an unknown key or a value of the wrong type is a one-line ConfigError naming it.
Known failures print one line `error: ...` and exit 2.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PREFIX = "--config."
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _known():
    from bottlenet_jax.errors import CheckpointError, ConfigError, DataError

    return ConfigError, CheckpointError, DataError


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the `KEY=VALUE` of each --config.KEY=VALUE argument, the other arguments)."""
    over = [a[len(PREFIX) :] for a in argv if a.startswith(PREFIX)]
    return over, [a for a in argv if not a.startswith(PREFIX)]


def parse_value(old, text: str, key: str):
    """`text` as the type of `old` (the value the key holds now)."""
    from bottlenet_jax.errors import ConfigError

    try:
        if isinstance(old, bool):
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError
            return text.lower() in _TRUE
        if isinstance(old, (tuple, list)):
            body = text.strip()
            if body[:1] in "([" and body[-1:] in ")]":
                body = body[1:-1]
            parts = [p.strip() for p in body.split(",") if p.strip()]
            kind = type(old[0]) if old else None
            if kind is bool:
                return tuple(parse_value(False, p, key) for p in parts)
            if kind in (int, float):
                return tuple(kind(p) for p in parts)
            return tuple(_literal(p) for p in parts) if kind is None else tuple(parts)
        if isinstance(old, int):
            return int(text)
        if isinstance(old, float):
            return float(text)
        return text  # str, and None placeholders (our configs' are strings: data_dir)
    except ValueError:
        want = "true/false" if isinstance(old, bool) else type(old).__name__
        raise ConfigError(f"--config.{key}={text}: not a valid {want} (the default is {old!r})") from None


def _literal(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def apply_overrides(cfg, overrides) -> None:
    """Apply `KEY=VALUE` strings to a ConfigDict in place (module docstring)."""
    import ml_collections

    from bottlenet_jax.codecs import codec_settings
    from bottlenet_jax.errors import ConfigError

    pairs = []
    for kv in overrides:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise ConfigError(f"--config.{kv}: expected --config.KEY=VALUE")
        pairs.append((key, value))
    for key, value in pairs:  # a codec swap first, so the new codec's own settings can follow
        if key in ("codec", "codec.name"):
            cfg.codec = ml_collections.ConfigDict(codec_settings(value))
    for key, value in pairs:
        if key in ("codec", "codec.name"):
            continue
        *parents, leaf = key.split(".")
        node = cfg
        for i, p in enumerate(parents):
            if p not in node or not hasattr(node[p], "keys"):
                raise ConfigError(f"--config.{key}: no config group {'.'.join(parents[: i + 1])!r}")
            node = node[p]
        if leaf not in node:
            where = ".".join(parents) or "the config"
            raise ConfigError(f"--config.{key}: not a key of {where} (its keys: {', '.join(sorted(node.keys()))})")
        old = node[leaf]
        if hasattr(old, "keys"):
            raise ConfigError(f"--config.{key}: is a group; set its keys (--config.{key}.KEY=VALUE)")
        node[leaf] = parse_value(old, value, key)


def load_config_file(path: str, *overrides: str):
    """`get_config()` of a config file given by path (as Flax's examples load theirs), with
    `KEY=VALUE` overrides (module docstring). The file may import its siblings as
    `configs.<name>`: the folder holding the file's folder is put on sys.path, so the package
    itself never imports the repo root."""
    import importlib.util

    from bottlenet_jax.errors import ConfigError

    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"--config={path}: no such config file")
    root = os.path.dirname(os.path.dirname(path))
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        cfg = module.get_config()
    except (ImportError, SyntaxError, AttributeError) as e:
        raise ConfigError(f"--config={path}: cannot load this config file ({type(e).__name__}: {e})") from None
    apply_overrides(cfg, overrides)
    return cfg


def _not_orbax(record) -> bool:
    return "orbax" not in record.pathname or record.levelno >= 30  # its warnings and errors stay


def setup_logging() -> None:
    """absl logging at INFO for this library's messages (resumed from, init_from, evaluations),
    without orbax's own INFO lines about every checkpoint it writes. The filter sits on the "absl"
    logger itself, so it holds whichever handler prints (absl's, or the root StreamHandler that
    importing orbax installs outside absl.app)."""
    import logging as std

    from absl import logging

    logging.set_verbosity(logging.INFO)
    logger = std.getLogger("absl")
    if _not_orbax not in logger.filters:
        logger.addFilter(_not_orbax)


def guarded(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except _known() as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)


#: the --config.KEY=VALUE arguments of this process's command line (set by `run`)
OVERRIDES: list[str] = []


def _parse(argv):
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.stderr.write(f"error: {str(e).splitlines()[0]}\n")
        sys.exit(2)


def run(main):
    """absl.app.run for train.py / eval.py: `--config.KEY=VALUE` arguments are taken out of the
    command line first (into OVERRIDES) and the rest parsed by absl; a bad flag is one line."""
    from absl import app

    OVERRIDES[:], argv = split_overrides(sys.argv)

    def quiet_main(argv):
        setup_logging()
        return main(argv)

    sys.argv = argv
    app.run(quiet_main, flags_parser=_parse)
