"""Light modules stay light: the opt-out list, the index, matching, the review book, the activity
log, the report and file safety load without OpenCV, dlib, SciPy or Flask (a desk page, `people`,
`log verify` and the unit tests of pure rules start in a fraction of a second)."""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT = ["types", "errors", "config", "fsutil", "optout_list", "matching", "index", "review", "activity_log", "report",
         "calibration", "picture_day", "users", "desk", "cohort", "scope", "folders", "pool", "models",
         "audit.listing", "audit.plan", "audit.state", "consent", "stored_faces", "jobs", "status", "start"]  # fmt: skip
HEAVY = ("cv2", "dlib", "scipy", "flask", "onnxruntime", "onnx", "av", "distributed")


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_import_no_heavy_library(module):
    code = (
        f"import sys, optout_guard.{module}; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"optout_guard.{module} imports {loaded}"


@pytest.mark.parametrize("command", [["--help"], ["people"], ["log"], ["status"]])
def test_light_commands_load_no_model_runtime(command, tmp_path):
    """`--help`, `people`, `log` and `status` start without OpenCV, Pillow, onnxruntime or dlib
    (issue 30); `people` and `status` read the index, a numpy archive: numpy is the one they load."""
    from optout_guard.config import load_settings
    from optout_guard.index import FaceIndex, save_index
    from optout_guard.models import embedding_fingerprint

    save_index(FaceIndex(embedding_fingerprint()), load_settings(tmp_path, environ={}))
    code = (
        "import sys\n"
        f"sys.argv = ['optout-guard', '--workspace', {str(tmp_path)!r}, *{command!r}]\n"
        "from optout_guard.start import run\n"  # the program, as installed
        "try:\n    run()\nexcept SystemExit:\n    pass\n"
        f"print('LOADED=' + ','.join(m for m in {(*HEAVY, 'PIL', 'numpy')!r} if m in sys.modules))\n"
    )
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = printed.rsplit("LOADED=", 1)[1].strip()
    assert loaded in ("", "numpy") if command in (["people"], ["status"]) else loaded == "", f"{command} loads {loaded}"


def test_no_import_circles():
    """Issue 29: no module imports one that imports it back — also not inside a function (a "lazy"
    circle is still a circle). Imports only for type checking do not count. (The last one, models ↔
    resnet, went when the graph cache moved to ``onnx_graphs``.)"""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "src" / "optout_guard"
    modules = {
        ("optout_guard." + ".".join(p.relative_to(root).with_suffix("").parts)).replace(".__init__", ""): p
        for p in root.rglob("*.py")
    }

    def imported(path: Path) -> set[str]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                       for n in ast.walk(node)}  # fmt: skip
        found: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("optout_guard"):
                found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("optout_guard")}
        return found & set(modules)

    graph = {name: imported(path) - {name} for name, path in modules.items()}

    def circle_from(start: str) -> list[str] | None:
        """A path of imports that leads from ``start`` back to it (any length), or None."""
        stack, seen = [(start, [start])], set()
        while stack:
            module, path = stack.pop()
            for nxt in graph[module]:
                if nxt == start:
                    return [*path, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    circles = [c for name in sorted(graph) if (c := circle_from(name))]
    assert circles == [], " → ".join(circles[0])

