"""Project-wide promises: geo/ stays pure, the database has PostGIS and the schema at head,
every setting is documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from sqlalchemy import Engine, text

from api.database import schema_status
from api.settings import Settings

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("api", "fastapi", "sqlalchemy", "geoalchemy2", "starlette")


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_geo_never_imports_the_service_layer() -> None:
    files = sorted((REPO / "geo").rglob("*.py"))
    assert files, "geo/ has no modules"
    offenders = {
        str(p.relative_to(REPO)): sorted(_imported_roots(p) & set(FORBIDDEN)) for p in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_database_has_postgis_and_schema_at_head(engine: Engine) -> None:
    with engine.connect() as conn:
        version = conn.execute(text("SELECT postgis_lib_version()")).scalar_one()
    assert version.split(".")[0] == "3"
    assert schema_status(engine)["up_to_date"] is True


def test_every_setting_has_a_row_in_the_readme_configuration_table() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = {
        name
        for line in table.splitlines()
        if line.startswith("| `ERN_")
        for name in re.findall(r"`(ERN_[A-Z0-9_]+)`", line.split("|")[1])
    }
    settings = {f"ERN_{name.upper()}" for name in Settings.model_fields}
    assert sorted(settings - documented) == []
    assert sorted(documented - settings) == []
