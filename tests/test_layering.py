"""The package's import graph runs one way (README, "Layout"): nothing imports upward, nothing
imports the repo-root `configs/` (entry points load config files by path), and there are no cycles.

Read from the source with `ast`, so imports inside functions count too; importing `a.b.c` runs the
packages' `a/__init__` and `a/b/__init__` first, so those edges count. And every module is imported
on its own into an interpreter holding none of the package (a cycle shows only in that order)."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "bottlenet_jax"

# Lower tiers never import higher ones. Within a tier imports are allowed but must not form a cycle.
TIERS = [
    ("errors",),
    ("parallel", "codecs", "edge", "data", "convert"),
    ("models",),
    ("steps",),
    ("checkpoint", "evaluation", "actions", "plots"),
    ("train_lib", "export"),
    ("cli", "demo", "experiments", "serve"),
]


def tier(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    for i, names in enumerate(TIERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: not in any tier of tests/test_layering.py (add it where it belongs)")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    p = ROOT.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in ROOT.rglob("*.py"):
        src, out = module_name(path), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out |= {
                    f"{node.module}.{a.name}" if is_module(f"{node.module}.{a.name}") else node.module
                    for a in node.names
                }
        out = {m for m in out if m.split(".")[0] in ("bottlenet_jax", "configs")}
        # importing a.b.c first runs a.b's __init__ (unless src is inside a.b: it is running already)
        parents = {".".join(m.split(".")[:i]) for m in out for i in range(2, m.count(".") + 1)}
        graph[src] = out | {p for p in parents if is_module(p) and not src.startswith(p + ".") and p != src}
    return graph


GRAPH = import_graph()


def test_the_graph_was_read():
    assert GRAPH["bottlenet_jax.train_lib"] >= {"bottlenet_jax.steps", "bottlenet_jax.evaluation"}
    assert "bottlenet_jax.codecs.base" in GRAPH["bottlenet_jax.codecs.jpeg.codec"]


@pytest.mark.parametrize("src", sorted(m for m in GRAPH if m != "bottlenet_jax"))
def test_no_module_imports_upward_or_the_repo_root(src):
    for dst in GRAPH[src]:
        assert not dst.startswith("configs"), f"{src} imports {dst}: load config files by path (cli.load_config_file)"
        if dst == "bottlenet_jax":
            continue
        assert tier(dst) <= tier(src), f"{src} (tier {tier(src)}) imports {dst} (tier {tier(dst)}): upward"


def test_codecs_and_models_know_nothing_of_training_evaluation_export_or_experiments():
    upper = ("train_lib", "evaluation", "export", "experiments", "steps", "checkpoint", "actions")
    for src, dsts in GRAPH.items():
        if src.startswith(("bottlenet_jax.codecs", "bottlenet_jax.models")):
            bad = [d for d in dsts if d.split(".")[1:2] and d.split(".")[1] in upper]
            assert not bad, f"{src} imports {bad}"
    assert not any(d.startswith("bottlenet_jax.train_lib") for d in GRAPH["bottlenet_jax.evaluation"])


def test_no_cycles():
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(path + [m])
        state[m] = "open"
        for d in GRAPH.get(m, ()):
            if d in GRAPH and d != m and not m.startswith(d + "."):  # a package's own __init__ is not a cycle
                visit(d, path + [m])
        state[m] = "done"

    for m in GRAPH:
        visit(m, [])


# Dataset preparation, the one step that needs TensorFlow (setup.cfg's `data` extra; make test runs
# without it, so every other module is imported below without TensorFlow installed).
NEEDS_TENSORFLOW = ("bottlenet_jax.data.prepare", "bottlenet_jax.data.fashion_mnist_tfds")


def test_only_dataset_preparation_imports_tensorflow():
    """Read from the source: no module but NEEDS_TENSORFLOW's imports tensorflow or TFDS, even
    inside a function (bottlenet_jax.data.fashion_mnist once did, at the top, for its builder)."""
    found = set()
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            if any(n.split(".")[0] in ("tensorflow", "tensorflow_datasets") for n in names):
                found.add(module_name(path))
    assert found == set(NEEDS_TENSORFLOW), found


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imported with none of the package loaded before it (third-party modules stay
    cached, so this takes seconds): an import cycle fails here even where the order hides it."""
    names = sorted(m for m in GRAPH if not m.endswith("__main__") and m not in NEEDS_TENSORFLOW)
    code = (
        "import importlib, sys\n"
        "bad = []\n"
        f"for name in {names!r}:\n"
        "    for m in [m for m in sys.modules if m == 'bottlenet_jax' or m.startswith('bottlenet_jax.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad) or 'all imported')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT.parent)
    assert p.stdout.strip() == "all imported", p.stdout + p.stderr[-2000:]


def test_evaluation_has_one_loop_and_library_code_logs():
    """Evaluation lived in seven places; now only evaluation.evaluate walks an eval split through the
    model (beside it only evaluation.edge_features, which reads the edge's features for codec fits
    and the lightweight calibration; it does not evaluate). Library modules log
    with absl instead of printing (entry points print their results)."""
    loops, prints = [], []
    entry = ("demo", "cli", "experiments", "serve", "export", "convert", "data.prepare")
    for path in ROOT.rglob("*.py"):
        name = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) == "eval_iterator"
            ):
                loops.append(name)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print":
                prints.append(name)
    assert sorted(set(loops) - {"bottlenet_jax.data.loader"}) == ["bottlenet_jax.evaluation"], loops
    assert not [m for m in prints if not m.split(".", 1)[-1].startswith(entry)], prints


def test_jpeg_codec_file_is_the_codec_only():
    """codecs/jpeg/codec.py once mixed tiling and the codec with JFIF stream editing and worker pools."""
    jpeg = (ROOT / "codecs" / "jpeg" / "codec.py").read_text()
    assert "multiprocessing" not in jpeg and "def segments" not in jpeg and "ProcessPoolExecutor" not in jpeg
    assert "def segments" in (ROOT / "codecs" / "jpeg" / "jfif.py").read_text()
    assert "ProcessPoolExecutor" in (ROOT / "codecs" / "jpeg" / "host.py").read_text()


def closure(module: str) -> set[str]:
    """Every package module importing `module` loads, itself included."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen or m not in GRAPH:
            continue
        seen.add(m)
        todo += GRAPH[m]
    return seen


def test_the_edge_client_depends_on_nothing_of_the_server():
    """The edge device loads the client; what it shares with the server is serve.protocol only."""
    cloud = {"server", "payload", "batcher", "model_process", "metrics", "__main__"}
    loaded = closure("bottlenet_jax.serve.client")
    assert "bottlenet_jax.serve.protocol" in loaded
    assert not {m for m in loaded if m.startswith("bottlenet_jax.serve.") and m.split(".")[-1] in cloud}, loaded


def imported_top_levels(path: pathlib.Path) -> set[str]:
    """The top-level packages a file imports, by `import x` or `from x[.y] import z` alike."""
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            out |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
            out.add(n.module.split(".")[0])
    return out


def test_one_range_coder_wrapper_and_jpeg_accounting_beside_the_stream_format():
    """constriction is called from codecs/coding/rangecoder.py only (`import constriction` and `from
    constriction import ...` alike); the host JPEG path counts its bytes with the stream format
    (jpeg/jfif.py), without the device codec."""
    users = [module_name(p) for p in ROOT.rglob("*.py") if "constriction" in imported_top_levels(p)]
    assert users == ["bottlenet_jax.codecs.coding.rangecoder"], users
    assert "bottlenet_jax.codecs.jpeg.xla" not in closure("bottlenet_jax.codecs.jpeg.jfif")
    assert "bottlenet_jax.codecs.jpeg.xla" not in GRAPH["bottlenet_jax.evaluation"]


def test_the_range_coder_check_sees_both_import_forms(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from constriction.stream import queue\n")
    assert "constriction" in imported_top_levels(f)


def test_codecs_are_grouped_by_concept_and_import_no_private_name_across_files():
    """codecs/ holds the contract and the small codecs at its top, the rest in jpeg/, entropy/ and
    coding/; no module imports a name starting with "_" from another module of the package."""
    flat = sorted(p.name for p in (ROOT / "codecs").glob("*.py"))
    assert not [n for n in flat if n.startswith(("jpeg", "entropy", "rans", "range", "density"))], flat
    private = []
    for path in ROOT.rglob("*.py"):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("bottlenet_jax"):
                private += [f"{module_name(path)}: {n.module}.{a.name}" for a in n.names if a.name.startswith("_")]
    assert not private, private


LONG_REASON = "Why over 400 lines:"


def test_no_module_above_400_lines_without_a_reason():
    """A module longer than 400 lines says why in one line of its docstring ("Why over 400 lines: ...")."""
    long = []
    for path in sorted(ROOT.rglob("*.py")):
        n = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if n > 400 and LONG_REASON not in doc:
            long.append(f"{module_name(path)} ({n} lines)")
    assert not long, long
