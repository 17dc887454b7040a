"""The package's shape, read from the source: which part may import which (docs/architecture.md).

Every module of the folders that ``[tool.setuptools] package-dir`` maps under ``emostream`` is parsed with
``ast``, and every import in it counts: at the top, inside a function, under ``if TYPE_CHECKING:``;
relative ones are resolved. Imports of the standard library and third parties are not checked. The rules:

- layers: ``schemas`` imports nothing of emostream but itself, ``model`` schemas and itself, ``stream`` and
  ``trainer`` schemas, model and themselves (neither the other); the top (``emostream/``) anything;
- inside ``stream``, the rooms' direction (:data:`ROOMS`): kafka, clickhouse and discovery import no other
  room; web may import those; review web and those; worker all of them;
- an underscore-prefixed name (or module) is imported only from within its own room;
- only ``emostream.*``: never the repository's folders as top-level packages (``stream``, ``model``...);
- every folder that holds Python is a package listed in ``[tool.setuptools] packages``, and every listed
  package exists: a package missing from the list is silently missing from the wheel.

The checker is a set of plain functions over :class:`Import` records, so it runs as well on a source
string (``imports_in``) as on the tree: the last tests show that it flags what it should.
"""

from __future__ import annotations

import ast
import functools
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = "emostream"
STREAM = "emostream.stream"

# layer -> the layers it may import besides itself; the top (TOP) may import anything. A layer that
# package-dir maps and this table does not name fails test_every_layer_and_room_has_a_rule.
LAYERS: dict[str, frozenset[str]] = {
    "emostream.schemas": frozenset(),
    "emostream.model": frozenset({"emostream.schemas"}),
    "emostream.stream": frozenset({"emostream.schemas", "emostream.model"}),
    "emostream.trainer": frozenset({"emostream.schemas", "emostream.model"}),
    "emostream.deploy": frozenset(),  # data (the DDL), no code
}

# room of stream -> the other rooms of stream it may import. A room is a subpackage of stream or a module
# directly in it (discovery); "" is stream's own __init__.py, which imports no room.
ROOMS: dict[str, frozenset[str]] = {
    "": frozenset(),
    "kafka": frozenset(),
    "clickhouse": frozenset(),
    "discovery": frozenset(),
    "web": frozenset({"clickhouse", "kafka", "discovery"}),
    "review": frozenset({"web", "clickhouse", "kafka", "discovery"}),
    "worker": frozenset({"web", "review", "clickhouse", "kafka", "discovery"}),
}

# Imports that go against the rooms' direction today, as (importing module, imported module). Listed so
# that the test passes while they wait to be fixed, and so that any NEW such edge fails. An entry whose
# edge is gone fails test_the_known_room_violations_are_still_there: delete it then.
KNOWN_ROOM_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()


# ---------------------------------------------------------------------------------------------------------
# the build's view of the tree


@functools.cache
def setuptools_table() -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return table


def package_dir() -> dict[str, str]:
    """Import name -> repository folder, as the build maps them."""
    return dict(setuptools_table()["package-dir"])


def listed_packages() -> list[str]:
    return list(setuptools_table()["packages"])


def old_top_level_names() -> frozenset[str]:
    """The folders the build maps under another name (``stream`` is ``emostream.stream``): never importable."""
    return frozenset(
        Path(folder).parts[0] for name, folder in package_dir().items() if name != ".".join(Path(folder).parts)
    )


def owner(path: Path) -> tuple[str, Path] | None:
    """The import name and folder of the deepest mapped folder that holds ``path`` (relative to ROOT)."""
    best: tuple[str, Path] | None = None
    for name, folder in package_dir().items():
        base = Path(folder)
        if path.is_relative_to(base) and (best is None or len(base.parts) > len(best[1].parts)):
            best = (name, base)
    return best


def dotted(path: Path) -> str:
    """``stream/worker/records.py`` -> ``emostream.stream.worker.records`` (a package is its ``__init__``)."""
    mapped = owner(path)
    assert mapped is not None, f"{path} is in no folder that package-dir maps"
    name, base = mapped
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([name, *parts])


@functools.cache
def python_files() -> tuple[Path, ...]:
    """Every ``.py`` file of the mapped folders, relative to ROOT, each counted under its deepest mapping."""
    found: set[Path] = set()
    for folder in package_dir().values():
        for file in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in file.parts:
                found.add(file.relative_to(ROOT))
    return tuple(sorted(found))


@functools.cache
def modules() -> dict[str, Path]:
    return {dotted(file): file for file in python_files()}


# ---------------------------------------------------------------------------------------------------------
# the imports


@dataclass(frozen=True)
class Import:
    """One imported thing: ``target`` is the module imported (``module.name`` where that is a module)."""

    path: str  # the importing file, as the messages name it
    line: int
    importer: str  # its dotted module name
    module: str  # absolute: ``import module`` or ``from module import name``
    name: str | None  # the name of a from-import
    target: str

    def where(self) -> str:
        what = f"{self.module}.{self.name}" if self.name and self.target == self.module else self.target
        return f"{self.path}:{self.line}: {self.importer} imports {what}"


def resolve(module: str | None, level: int, importer: str, is_package: bool, where: str) -> str:
    """The absolute module of a (possibly relative) from-import."""
    if not level:
        assert module is not None
        return module
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    if level - 1 >= len(package):
        raise ValueError(f"{where}: a relative import beyond the top package")
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


def imports_in(
    source: str, importer: str, is_package: bool = False, path: str = "<string>", known: Iterable[str] = ()
) -> list[Import]:
    """Every import in ``source``, wherever it stands, for a module named ``importer``.

    ``known``: the modules there are, so that ``from pkg import mod`` counts as an import of ``pkg.mod``.
    """
    known = set(known)
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(path, node.lineno, importer, alias.name, None, alias.name))
        elif isinstance(node, ast.ImportFrom):
            module = resolve(node.module, node.level, importer, is_package, f"{path}:{node.lineno}")
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                target = submodule if submodule in known else module
                found.append(Import(path, node.lineno, importer, module, alias.name, target))
    return sorted(found, key=lambda i: (i.line, i.target, i.name or ""))


@functools.cache
def graph() -> tuple[Import, ...]:
    known = set(modules())
    found: list[Import] = []
    for name, file in modules().items():
        source = (ROOT / file).read_text()
        found += imports_in(source, name, file.name == "__init__.py", str(file), known)
    return tuple(found)


# ---------------------------------------------------------------------------------------------------------
# where a module stands


def is_ours(module: str) -> bool:
    return module == TOP or module.startswith(TOP + ".")


def layer_of(module: str) -> str:
    """The deepest mapped import name that holds ``module``: ``emostream.stream`` for a stream module, ``emostream``
    for the top's."""
    candidates = [name for name in package_dir() if module == name or module.startswith(name + ".")]
    return max(candidates, key=len) if candidates else TOP


def room_of(module: str) -> str:
    """A stream module's room (``emostream.stream.kafka``, ``emostream.stream.discovery``; ``emostream.stream`` for
    its __init__); elsewhere the layer (the top is one room)."""
    layer = layer_of(module)
    if layer != STREAM or module == STREAM:
        return layer
    return ".".join(module.split(".")[: len(STREAM.split(".")) + 1])


def stream_room(module: str) -> str:
    """``kafka`` for ``emostream.stream.kafka.ingest``; ``""`` for ``emostream.stream``."""
    return room_of(module)[len(STREAM) + 1 :]


def is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


# ---------------------------------------------------------------------------------------------------------
# the rules: each takes imports and returns one message per breach, naming file, line and what was imported


def layer_problems(imports: Iterable[Import]) -> list[str]:
    problems = []
    for i in imports:
        if not is_ours(i.target):
            continue
        mine, theirs = layer_of(i.importer), layer_of(i.target)
        if mine == TOP or theirs == mine:
            continue
        problems += breach(
            i,
            LAYERS,
            mine,
            theirs,
            f"{mine} has no rule in LAYERS",
            f"{mine} may import only itself and {{may}}",
            "nothing of emostream",
        )
    return problems


def breach(
    i: Import, rules: dict[str, frozenset[str]], mine: str, theirs: str, unruled: str, refused: str, nothing: str
) -> list[str]:
    """The one message for an import from ``mine`` to ``theirs`` under ``rules``, or none when it is allowed."""
    allowed = rules.get(mine)
    if allowed is None:
        return [f"{i.where()}: {unruled}"]
    if theirs not in allowed:
        return [f"{i.where()}: " + refused.format(may=", ".join(sorted(allowed)) or nothing)]
    return []


def room_problems(imports: Iterable[Import], known: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
    problems = []
    for i in imports:
        if layer_of(i.importer) != STREAM or layer_of(i.target) != STREAM or i.target == STREAM:
            continue  # importing stream's __init__ itself reaches no room
        mine, theirs = stream_room(i.importer), stream_room(i.target)
        if mine == theirs or (i.importer, i.target) in known:
            continue
        problems += breach(
            i,
            ROOMS,
            mine,
            theirs,
            f"stream room {mine!r} has no rule in ROOMS",
            f"stream.{mine or '__init__'} may import {{may}}, not stream.{theirs}",
            "no other room",
        )
    return problems


def private_problems(imports: Iterable[Import]) -> list[str]:
    problems = []
    for i in imports:
        if not is_ours(i.target):
            continue
        private = [part for part in i.target.split(".") if is_private(part)]
        if i.name is not None and i.target == i.module and is_private(i.name):
            private.append(i.name)
        if private and room_of(i.importer) != room_of(i.target):
            problems.append(
                f"{i.where()}: {', '.join(private)} is private to {room_of(i.target)}, not for {room_of(i.importer)}"
            )
    return problems


def old_name_problems(imports: Iterable[Import], old: frozenset[str] | None = None) -> list[str]:
    old = old_top_level_names() if old is None else old
    return [
        f"{i.where()}: {i.module.split('.')[0]} is not a top-level package; import emostream.{i.module}"
        for i in imports
        if i.module.split(".")[0] in old
    ]


def problems_of(imports: Iterable[Import]) -> list[str]:
    imports = list(imports)
    return layer_problems(imports) + room_problems(imports) + private_problems(imports) + old_name_problems(imports)


def report(problems: list[str]) -> str:
    return f"{len(problems)} import(s) against docs/architecture.md:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------------------
# the tree


def test_every_layer_and_room_has_a_rule() -> None:
    layers = {layer_of(name) for name in package_dir()} - {TOP}
    assert not layers - set(LAYERS), f"mapped in package-dir, no rule in LAYERS: {sorted(layers - set(LAYERS))}"
    rooms = {stream_room(name) for name in modules() if layer_of(name) == STREAM}
    assert rooms, "no module of emostream.stream found: the graph reads nothing"
    assert not rooms - set(ROOMS), (
        f"stream rooms without a rule in ROOMS (add them here and to docs/architecture.md): "
        f"{sorted(rooms - set(ROOMS))}"
    )


def test_the_graph_reads_every_module() -> None:
    assert modules(), "package-dir maps no folder with Python in it"
    for folder in package_dir().values():
        if any((ROOT / folder).rglob("*.py")):
            assert any(file.is_relative_to(folder) for file in python_files()), folder
    assert any(is_ours(i.target) for i in graph()), "no import of emostream found anywhere"


def test_layers() -> None:
    problems = layer_problems(graph())
    assert not problems, report(problems)


def test_the_rooms_of_stream_point_one_way() -> None:
    problems = room_problems(graph(), KNOWN_ROOM_VIOLATIONS)
    assert not problems, report(problems)


def test_the_known_room_violations_are_still_there() -> None:
    present = {(i.importer, i.target) for i in graph()}
    gone = sorted(KNOWN_ROOM_VIOLATIONS - present)
    assert not gone, f"fixed, so delete from KNOWN_ROOM_VIOLATIONS: {gone}"
    for importer, target in KNOWN_ROOM_VIOLATIONS:  # each is a breach, else it needs no entry
        edge = [i for i in graph() if (i.importer, i.target) == (importer, target)]
        assert room_problems(edge), f"{importer} -> {target} is allowed by ROOMS: delete it from KNOWN_ROOM_VIOLATIONS"


def test_no_private_name_is_imported_from_another_room() -> None:
    problems = private_problems(graph())
    assert not problems, report(problems)


def test_only_emostream_names_are_imported() -> None:
    assert old_top_level_names(), "package-dir maps no folder under another name"
    problems = old_name_problems(graph())
    assert not problems, report(problems)


def package_folders() -> dict[str, Path]:
    """Every folder of the mapped folders that holds Python (an ``__init__.py`` or any module), by dotted name."""
    folders = {file.parent for file in python_files()}
    return {dotted(folder / "__init__.py"): folder for folder in folders}


def test_every_package_folder_is_in_the_wheel() -> None:
    listed = set(listed_packages())
    missing = sorted(f"{folder}/ ({name})" for name, folder in package_folders().items() if name not in listed)
    assert not missing, f"holds Python but is not in [tool.setuptools] packages, so not in the wheel: {missing}"
    no_init = sorted(
        str(folder) for name, folder in package_folders().items() if not (ROOT / folder / "__init__.py").is_file()
    )
    assert not no_init, f"holds modules but no __init__.py: {no_init}"


def folder_of(package: str) -> Path | None:
    """Where the build looks for a listed package."""
    candidates = [name for name in package_dir() if package == name or package.startswith(name + ".")]
    if not candidates:
        return None
    name = max(candidates, key=len)
    rest = package[len(name) :].lstrip(".")
    return Path(package_dir()[name], *rest.split(".")) if rest else Path(package_dir()[name])


def test_every_listed_package_exists() -> None:
    listed = listed_packages()
    assert len(listed) == len(set(listed)), f"listed twice: {sorted({p for p in listed if listed.count(p) > 1})}"
    absent = [package for package in listed if (folder := folder_of(package)) is None or not (ROOT / folder).is_dir()]
    assert not absent, f"in [tool.setuptools] packages, but no such folder: {absent}"
    data = setuptools_table().get("package-data", {})
    unlisted = sorted(set(data) - set(listed))
    assert not unlisted, f"package-data for packages not in [tool.setuptools] packages: {unlisted}"


# ---------------------------------------------------------------------------------------------------------
# the checker flags what it should


def check(source: str, importer: str, is_package: bool = False, known: Iterable[str] = ()) -> list[str]:
    path = importer.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    return problems_of(imports_in(source, importer, is_package, path, known))


def test_the_checker_flags_a_stream_module_importing_the_trainer() -> None:
    problems = check("from emostream.trainer.data import x\n", "emostream.stream.worker.fake")
    assert len(problems) == 1, problems
    assert problems[0].startswith("emostream/stream/worker/fake.py:1: emostream.stream.worker.fake imports ")
    assert "emostream.trainer.data" in problems[0]


@pytest.mark.parametrize(
    ("source", "importer", "imported"),
    [
        # every place an import can stand
        ("def f():\n    from emostream.trainer import data\n", "emostream.stream.kafka.x", "emostream.trainer"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import emostream.stream.kafka.ingest\n",
            "emostream.model.x",
            "emostream.stream.kafka.ingest",
        ),
        ("try:\n    import emostream.settings\nexcept ImportError:\n    pass\n", "emostream.schemas.x", "settings"),
        # each layer
        ("from emostream.model.runtime import load_runtime\n", "emostream.schemas.labels", "emostream.model.runtime"),
        ("from emostream.stream.discovery import read_state\n", "emostream.model.registry", "emostream.stream"),
        ("from emostream.stream.clickhouse.sink import Sink\n", "emostream.trainer.retrain", "emostream.stream"),
        ("import emostream\n", "emostream.stream.web.auth", "emostream"),
        # the rooms of stream
        ("from emostream.stream.worker.scoring import BatchScorer\n", "emostream.stream.kafka.x", "worker.scoring"),
        ("from emostream.stream.web.auth import WebConfig\n", "emostream.stream.clickhouse.x", "web.auth"),
        ("from emostream.stream.kafka.broker import free_port\n", "emostream.stream.discovery", "kafka.broker"),
        ("from emostream.stream.review.queue import Q\n", "emostream.stream.web.x", "review.queue"),
        ("from emostream.stream.worker.records import R\n", "emostream.stream.review.x", "worker.records"),
        # relative imports, resolved
        ("from ..worker import scoring\n", "emostream.stream.kafka.x", "emostream.stream.worker"),
        ("from ...trainer.data import x\n", "emostream.stream.worker.x", "emostream.trainer.data"),
        ("from ..trainer import data\n", "emostream.stream.x", "emostream.trainer"),
        # private names of another room
        ("from emostream.model.runtime import _fast_path\n", "emostream.stream.worker.x", "_fast_path"),
        ("from emostream.stream.clickhouse.sql import _limits\n", "emostream.stream.worker.x", "_limits"),
        ("from emostream.stream.kafka._wire import codec\n", "emostream.stream.web.x", "_wire"),
        ("from emostream.stream.web.auth import _under\n", "emostream.settings", "_under"),
        # the old top-level names
        ("import stream.worker.app\n", "emostream.cli", "stream.worker.app"),
        ("from model.runtime import load_runtime\n", "emostream.demo", "model.runtime"),
        ("from schemas import Tweet\n", "emostream.stream.worker.x", "schemas"),
        ("from trainer.data import load_emotion\n", "emostream.trainer.eda", "trainer.data"),
    ],
)
def test_the_checker_flags(source: str, importer: str, imported: str) -> None:
    problems = check(source, importer)
    assert problems, f"not flagged: {source!r} in {importer}"
    assert all(p.startswith(importer.replace(".", "/") + ".py:") for p in problems), problems
    assert any(imported in p for p in problems), problems


@pytest.mark.parametrize(
    ("source", "importer"),
    [
        ("import numpy\nfrom faust.types import EventT\n", "emostream.schemas.x"),  # third parties: not checked
        ("from emostream.schemas import LABELS\n", "emostream.schemas.messages"),
        ("from emostream.schemas.labels import LABELS\n", "emostream.model.runtime"),
        ("from emostream.model.registry import version_order\n", "emostream.stream.clickhouse.supersede"),
        ("from emostream.model.runtime import EmotionModel\n", "emostream.trainer.retrain"),
        ("from emostream.trainer.retrain import retrain\nimport emostream.stream\n", "emostream.retraining"),
        ("from emostream.stream.kafka.faust_internals import committed_offsets\n", "emostream.stream.web.x"),
        ("from emostream.stream.web.auth import Principal\n", "emostream.stream.review.service"),
        ("from emostream.stream.review.routes import mount_review\n", "emostream.stream.worker.process"),
        ("from emostream.stream.discovery import read_state\n", "emostream.stream.web.endpoint"),
        ("from emostream.stream.worker.records import _parse\n", "emostream.stream.worker.scoring"),  # same room
        ("from . import _helpers\n", "emostream.model.x"),  # same room
        ("from . import messages\n", "emostream.schemas"),
        ("from emostream.schemas import __all__\n", "emostream.stream.worker.x"),  # dunder: not private
    ],
)
def test_the_checker_lets_through(source: str, importer: str) -> None:
    is_package = importer == "emostream.schemas"
    assert check(source, importer, is_package) == []


def test_a_from_import_of_a_module_counts_as_that_module() -> None:
    known = {"emostream.stream.worker", "emostream.stream.worker.scoring"}
    (found,) = imports_in("from ..worker import scoring\n", "emostream.stream.web.views", known=known)
    assert (found.module, found.name, found.target) == (
        "emostream.stream.worker",
        "scoring",
        "emostream.stream.worker.scoring",
    )
    assert check("from ..worker import scoring\n", "emostream.stream.web.views", known=known)


def test_the_allow_list_covers_only_its_edge() -> None:
    source = "from emostream.stream.review.queue import ReviewQueue\n"
    known = frozenset({("emostream.stream.web.endpoint", "emostream.stream.review.queue")})
    endpoint = imports_in(source, "emostream.stream.web.endpoint", path="stream/web/endpoint.py")
    assert room_problems(endpoint, known) == []
    other = imports_in(source, "emostream.stream.web.views", path="stream/web/views.py")
    (problem,) = room_problems(other, known)
    assert problem.startswith("stream/web/views.py:1: emostream.stream.web.views imports emostream.stream.review.queue")


def test_module_names_follow_the_build() -> None:
    assert dotted(Path("emostream/settings.py")) == "emostream.settings"
    assert dotted(Path("emostream/__init__.py")) == "emostream"
    for name, folder in package_dir().items():
        assert dotted(Path(folder) / "__init__.py") == name
        assert dotted(Path(folder, "a", "b.py")) == f"{name}.a.b"
    assert room_of("emostream.stream.worker.records") == "emostream.stream.worker"
    assert room_of("emostream.stream.discovery") == "emostream.stream.discovery"
    assert room_of("emostream.schemas.labels") == "emostream.schemas"
    assert room_of("emostream.cli") == TOP
    assert {"stream", "model", "schemas", "trainer"} <= old_top_level_names()
    assert "emostream" not in old_top_level_names()
