"""Type-check the package as it is installed: ``emostream.*``, with its folders mapped under one name.

mypy finds modules by their place in the file tree, and the repository keeps ``schemas/``, ``model/``,
``stream/``, ``trainer/`` beside ``emostream/`` (``[tool.setuptools] package-dir`` maps them under
``emostream`` at build time; the editable install maps them with an import hook, which mypy cannot see).
So this builds the installed layout as a tree of symbolic links under ``build/typecheck``, runs mypy on
it with the settings in ``pyproject.toml``, and reports each error at its path in the repository.

Usage: python tools/typecheck.py [mypy options]
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def link_tree() -> dict[str, str]:
    """The installed layout as links; returns {link path prefix: repository path prefix} for the report."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(TREE, ignore_errors=True)
    (TREE / "emostream").mkdir(parents=True)
    back: dict[str, str] = {}
    for entry in sorted((ROOT / package_dir["emostream"]).iterdir()):
        if entry.suffix == ".py" or (entry.is_dir() and (entry / "__init__.py").exists()):
            (TREE / "emostream" / entry.name).symlink_to(entry)
    for package, folder in package_dir.items():
        if package == "emostream" or package.count(".") != 1:
            continue
        link = TREE / Path(*package.split("."))
        link.symlink_to(ROOT / folder, target_is_directory=True)
        back[f"{link.relative_to(ROOT)}/"] = f"{folder}/"
    back[f"{(TREE / 'emostream').relative_to(ROOT)}/"] = f"{package_dir['emostream']}/"
    return back


def main() -> int:
    back = link_tree()
    stdout, stderr, status = api.run(
        [*sys.argv[1:], "--config-file", str(ROOT / "pyproject.toml"), str(TREE / "emostream")]
    )
    for prefix, folder in sorted(back.items(), key=lambda item: -len(item[0])):
        stdout = stdout.replace(prefix, folder)
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
