"""README's "How the code is laid out" has one line per folder of the project, and no other."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# build output, caches and local state: not part of the layout
SKIPPED = {"__pycache__", "var", "build", "dist", "node_modules"}


def _folders() -> set[str]:
    """Folders of the project, two levels deep, without hidden, cache or output folders."""
    found = set()
    for top in REPO.iterdir():
        if not top.is_dir() or top.name.startswith(".") or top.name in SKIPPED:
            continue
        if top.name.endswith(".egg-info"):
            continue
        found.add(f"{top.name}/")
        for sub in top.iterdir():
            if sub.is_dir() and not sub.name.startswith(".") and sub.name not in SKIPPED:
                found.add(f"{top.name}/{sub.name}/")
    return found


def _described() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    tree = section.split("```", 2)[1]
    return [line.split()[0] for line in tree.splitlines() if line.strip()]


def test_every_folder_has_one_line_and_every_line_a_folder() -> None:
    described = _described()
    assert len(described) == len(set(described)), "a folder is described twice"
    folders = _folders()
    assert sorted(folders - set(described)) == [], "folders without a line in the README"
    assert sorted(set(described) - folders) == [], "README lines naming no folder"


def test_lines_are_sorted_and_say_something() -> None:
    readme = (REPO / "README.md").read_text()
    tree = readme.split("## How the code is laid out", 1)[1].split("```", 2)[1]
    lines = [line for line in tree.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == sorted(line.split()[0] for line in lines)
    assert all(len(line.split()) > 1 for line in lines), "a folder line needs a description"
