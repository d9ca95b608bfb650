"""Every command the docs show runs as written: each `python train.py ...`, `python eval.py ...` and
`python -m bottlenet_jax....` line of README.md and of the configs' docstrings is parsed by its own
entry point and its configs built and validated (--dry_run: no data, no training). A command whose
data or workdir this machine lacks is still parsed and checked as far as it can be without them."""

import ast
import contextlib
import glob
import importlib
import io
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = re.compile(r"python (train\.py|eval\.py|-m bottlenet_jax(?:\.\w+)*)((?:\s+[^\s`#&|;]+)*)")


def doc_texts():
    with open(os.path.join(ROOT, "README.md")) as f:
        yield "README.md", f.read()
    configs = glob.glob(os.path.join(ROOT, "configs", "*.py")) + glob.glob(os.path.join(ROOT, "configs", "*", "*.py"))
    for path in sorted(configs):
        with open(path) as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
        yield os.path.relpath(path, ROOT), doc


def commands():
    """(source, entry, argument string) of every documented command, continuation lines joined."""
    out = []
    for source, text in doc_texts():
        text = re.sub(r"\\\n\s*", " ", text)  # shell continuation lines
        for line in text.splitlines():
            code = [m for m in re.findall(r"`([^`]+)`", line)] or [line]
            for chunk in code:
                chunk = chunk.split("  #")[0]  # a trailing comment
                stripped = chunk.strip()
                if not stripped.startswith("python ") and chunk is line:
                    continue
                for m in COMMAND.finditer(chunk):
                    out.append((source, m.group(1), m.group(2).strip()))
    return sorted(set(out))


def test_the_docs_show_commands_of_every_kind():
    entries = {e for _, e, _ in commands()}
    assert {"train.py", "eval.py", "-m bottlenet_jax.export", "-m bottlenet_jax.experiments"} <= entries


def test_every_documented_command_parses_and_its_config_builds(capsys):
    cmds = commands()
    failures, checked, without_tf = [], 0, []
    for script in ("train.py", "eval.py"):
        args = [a for _, e, a in cmds if e == script]
        p = subprocess.run(
            [sys.executable, os.path.join(ROOT, "tests", "entry_dry_run.py"), script, *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
        )
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith(("ok:", "FAIL:"))]
        assert len(lines) == len(args), p.stdout[-2000:] + p.stderr[-2000:]
        failures += [ln for ln in lines if ln.startswith("FAIL")]
        checked += len(lines)
    for source, entry, argstr in cmds:
        if not entry.startswith("-m "):
            continue
        try:
            module = importlib.import_module(entry[3:])
        except ModuleNotFoundError as e:  # dataset preparation, where TensorFlow is not installed (make test)
            if (e.name or "").split(".")[0] not in ("tensorflow", "tensorflow_datasets"):
                raise
            without_tf.append(f"python {entry} {argstr}")
            continue
        if hasattr(module, "__path__"):  # a package: `python -m` runs its __main__
            module = importlib.import_module(entry[3:] + ".__main__")
        main = module.main
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                main([*shlex.split(argstr), "--dry_run"])
            ok = "dry run:" in out.getvalue()
        except SystemExit as e:
            ok = False
            out.write(f" (exit {e.code})")
        checked += 1
        if not ok:
            failures.append(f"FAIL: {source}: python {entry} {argstr} -> {out.getvalue()[-300:]}")
    with capsys.disabled():
        print(f"\ndocumented commands checked: {checked} ({len(failures)} failed)")
        if without_tf:
            print(f"not checked (TensorFlow is not installed here): {'; '.join(without_tf)}")
    assert not failures, "\n".join(failures)
