"""Shared entry-point plumbing: known failures print one line `error: ...` and exit 2."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _known():
    from bottlenet_jax.checkpoint import CheckpointError
    from bottlenet_jax.codecs import ConfigError
    known = [ConfigError, CheckpointError]
    try:
        from bottlenet_jax.data.input_pipeline import DataError
        known.append(DataError)
    except ImportError:
        pass
    return tuple(known)


def guarded(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except _known() as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)


def fmt(d: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


def _parse(argv):
    from absl import flags
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        msg = str(e).splitlines()[0]
    except (AttributeError, KeyError, ValueError, TypeError, ImportError, FileNotFoundError, SyntaxError) as e:
        msg = f"bad --config: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    sys.stderr.write(f"error: {msg}\n")
    sys.exit(2)


def run(main):
    """absl.app.run, but a bad flag, --config file or config key is one line, not a traceback."""
    from absl import app, logging

    def quiet_main(argv):
        logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
        return main(argv)
    app.run(quiet_main, flags_parser=_parse)
