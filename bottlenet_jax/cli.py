"""Shared entry-point plumbing: known failures print one line `error: ...` and exit 2."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _known():
    from bottlenet_jax.errors import CheckpointError, ConfigError, DataError

    return ConfigError, CheckpointError, DataError


def load_config_file(path: str, *overrides: str):
    """`get_config()` of a config file given by path (as Flax's examples load theirs), with
    `key.sub=value` overrides (`codec=NAME` replaces the codec block). The file may import its
    siblings as `configs.<name>`: the folder holding the file's folder is put on sys.path, so the
    package itself never imports the repo root."""
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
    spec.loader.exec_module(module)
    cfg = module.get_config()
    for kv in overrides:
        key, _, value = kv.partition("=")
        if key == "codec":  # a whole codec block: that codec's settings at their defaults
            import ml_collections

            from bottlenet_jax.codecs import codec_settings

            cfg.codec = ml_collections.ConfigDict(codec_settings(value))
            continue
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        old = node[leaf]
        if isinstance(old, bool):
            node[leaf] = value.lower() in ("1", "true", "yes")
        else:
            node[leaf] = value if old is None else type(old)(value)
    return cfg


def guarded(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except _known() as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)


def _parse(argv):
    from absl import flags

    try:
        rest = flags.FLAGS(argv)
        if "config" in flags.FLAGS:
            flags.FLAGS.config.keys()  # ml_collections loads the file lazily: fail here, in one line
        return rest
    except flags.Error as e:
        msg = str(e).splitlines()[0]
    except OSError:
        given = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
        msg = f"--config={given[0] if given else '?'}: cannot load this config file (missing or unreadable)"
    except (AttributeError, KeyError, ValueError, TypeError, ImportError, SyntaxError) as e:
        text = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
        msg = f"bad --config override: {text}"
    sys.stderr.write(f"error: {msg}\n")
    sys.exit(2)


def run(main):
    """absl.app.run, but a bad flag, --config file or config key is one line, not a traceback."""
    from absl import app, logging

    def quiet_main(argv):
        logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
        return main(argv)

    app.run(quiet_main, flags_parser=_parse)
