"""Dry-run many command lines of one absl entry point (train.py or eval.py) in one process.

    python tests/entry_dry_run.py train.py 'ARGS OF COMMAND 1' 'ARGS OF COMMAND 2' ...

Each command's arguments are parsed by the entry point's own flags (re-parsed from scratch per
command), with --dry_run added; prints one line per command: `ok: ...` or `FAIL: ...`.
"""

import contextlib
import io
import os
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.chdir(ROOT)


def main():
    script, *commands = sys.argv[1:]
    namespace = {"__name__": "entry", "__file__": os.path.join(ROOT, script)}
    with open(os.path.join(ROOT, script)) as f:
        exec(compile(f.read(), script, "exec"), namespace)  # defines its flags and main(), runs nothing
    from absl import flags

    from bottlenet_jax import cli

    failed = 0
    for line in commands:
        argv = [script, *shlex.split(line), "--dry_run"]
        cli.OVERRIDES[:], argv = cli.split_overrides(argv)
        out, err = io.StringIO(), io.StringIO()
        try:
            flags.FLAGS.unparse_flags()
            rest = flags.FLAGS(argv)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                namespace["main"](rest)
            ok = "dry run:" in out.getvalue()
            msg = out.getvalue().strip().splitlines()[-1] if ok else f"no dry-run line: {out.getvalue()[-300:]}"
        except SystemExit as e:
            ok, msg = False, f"exit {e.code}: {err.getvalue().strip()[-300:]}"
        except Exception as e:
            ok, msg = False, f"{type(e).__name__}: {e}"
        failed += not ok
        print(f"{'ok' if ok else 'FAIL'}: {script} {line} -> {msg}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
