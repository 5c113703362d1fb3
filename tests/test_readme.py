"""The README's examples run, its API signatures match the code, and its figure exists.

Every code block fenced as ```python in README.md is run, in the order of the
README, each in a fresh namespace (so each block must be complete on its own), on
whichever backend the suite runs on. Blocks that must not run use another fence
(```bash, ```text, ...). Signatures are written in ```text blocks as
``keras_lmu.NAME(argument, argument=default, ...)`` and are compared with
:func:`inspect.signature` of the code.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

import keras_lmu

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIGURE_SCRIPT = ROOT / "docs" / "make_figures.py"

FENCE = re.compile(r"^(`{3,})\s*([^`\s]*)[^`]*$")


def fenced_blocks(text: str) -> list[tuple[str, int, str]]:
    """``(info string, first line number, code)`` of every fenced code block."""
    blocks = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, info = opening.groups()
        start = index + 1
        index = start
        while index < len(lines) and lines[index].strip() != fence:
            index += 1
        if index == len(lines):
            raise ValueError(f"README.md:{start}: code block is never closed")
        blocks.append((info, start + 1, "\n".join(lines[start:index]) + "\n"))
        index += 1
    return blocks


BLOCKS = fenced_blocks(README.read_text(encoding="utf-8"))
PYTHON_BLOCKS = [(line, code) for info, line, code in BLOCKS if info == "python"]


def signatures() -> list[tuple[int, str, str]]:
    """``(line, dotted name, signature text)`` of every ``keras_lmu.NAME(...)`` in text blocks."""
    found = []
    for info, line, code in BLOCKS:
        if info != "text":
            continue
        current = None
        for offset, text in enumerate(code.splitlines()):
            match = re.match(r"(keras_lmu(?:\.\w+)+)\(", text)
            if match:
                current = [line + offset, match.group(1), text[match.end(1) :]]
                found.append(current)
            elif current is not None:
                current[2] += "\n" + text
    return [tuple(entry) for entry in found]


SIGNATURES = signatures()


def resolve(dotted: str):
    obj = keras_lmu
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize(
    ("line", "code"), PYTHON_BLOCKS, ids=[f"README.md:{line}" for line, _ in PYTHON_BLOCKS]
)
def test_python_example_runs(line, code, tmp_path, monkeypatch):
    """Each block runs, and what each ``print`` shows is what its comment says: the
    comment at the end of the line, or on the next line, starts with the printed text
    (followed by its end, a colon or a space)."""
    monkeypatch.chdir(tmp_path)  # anything an example writes stays out of the repository
    printed = []

    def record_print(*values, sep=" ", **kwargs):
        printed.append((inspect.currentframe().f_back.f_lineno, sep.join(map(str, values))))

    namespace = {"__name__": "__readme__", "print": record_print}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)
    expected = printed_comments(code)
    assert sorted({number for number, _ in printed}) == sorted(expected)
    for number, text in printed:
        where = f"README.md:{line + number - 1}"
        assert re.match(re.escape(text) + r"($|[:\s])", expected[number]), (where, text)


def printed_comments(code: str) -> dict[int, str]:
    """The comment saying what each ``print(...)`` line of ``code`` shows, by line
    number (from 1): after ``  # `` on the line, or a ``# `` line right after it."""
    lines = code.splitlines()
    comments = {}
    for number, text in enumerate(lines, start=1):
        if not text.startswith("print("):
            continue
        if "  # " in text:
            comments[number] = text.split("  # ", 1)[1]
        else:
            following = lines[number] if number < len(lines) else ""
            assert following.startswith("# "), f"README: print at line {number} has no comment"
            comments[number] = following[2:]
    return comments


def test_readme_has_examples():
    assert len(PYTHON_BLOCKS) >= 3, "the README's ```python examples were not found"


def test_documented_signatures_match_code():
    documented = {name for _, name, _ in SIGNATURES}
    public_legendre = {
        f"keras_lmu.legendre.{name}"
        for name, obj in vars(keras_lmu.legendre).items()
        if inspect.isfunction(obj)
        and not name.startswith("_")
        and obj.__module__ == keras_lmu.legendre.__name__
    }
    expected = {"keras_lmu.LMU", "keras_lmu.LMUCell", "keras_lmu.LMUFeedforward"}
    missing = sorted((expected | public_legendre) - documented)
    assert not missing, f"README.md documents no signature for {missing}"

    for line, name, text in SIGNATURES:
        function = ast.parse(f"def f{text}:\n    pass\n").body[0]
        args = function.args
        readme = [(a.arg, "positional_or_keyword") for a in args.args]
        readme += [(a.arg, "keyword_only") for a in args.kwonlyargs]
        if args.vararg:
            readme.append((args.vararg.arg, "var_positional"))
        if args.kwarg:
            readme.append((args.kwarg.arg, "var_keyword"))
        defaults = dict(
            zip(
                [a.arg for a in args.args][len(args.args) - len(args.defaults) :],
                [ast.literal_eval(d) for d in args.defaults],
                strict=True,
            )
        )
        for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            if d is not None:
                defaults[a.arg] = ast.literal_eval(d)

        parameters = inspect.signature(resolve(name)).parameters.values()
        code = [(p.name, p.kind.name.lower()) for p in parameters]
        assert [n for n, _ in readme] == [n for n, _ in code], f"README.md:{line} {name}"
        assert readme == code, f"README.md:{line} {name}: kinds of arguments"
        code_defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
        assert defaults == code_defaults, f"README.md:{line} {name}: defaults"


def test_readme_images_exist():
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", README.read_text(encoding="utf-8"))
    assert images, "the README shows no figure"
    for image in images:
        assert (ROOT / image).is_file(), f"README.md shows {image}, which does not exist"


def test_figure_script_draws_the_figure(tmp_path):
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("make_figures", FIGURE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "legendre.png"
    module.make_legendre_figure(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
