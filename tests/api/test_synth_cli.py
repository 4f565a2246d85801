"""`ern synth`: members as GeoJSON or JSON from a compiled graph, and clear usage errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from api.cli.synth import _parse_mix, bulk_load, synth
from api.members.schemas import MemberCreate
from api.settings import Settings
from geo.graph import build_graphs, save_graph
from geo.synth import members_from_geojson, synth_members
from geo.validate import check_area, check_length, count_vertices
from tests.paths import HELSINKI


@pytest.fixture(scope="module")
def helsinki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_cli") / "helsinki"
    for graph in build_graphs(HELSINKI, ["walk", "drive"]).values():
        save_graph(graph, out)
    return out


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(synth)
    return app


class TestSynthCommand:
    def test_geojson_output_holds_member_bodies(
        self, runner: CliRunner, helsinki_dir: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "members.geojson"
        args = ["--graph-dir", str(helsinki_dir), "--n", "25", "--seed", "4", "--out", str(out)]
        result = runner.invoke(_app(), args)
        assert result.exit_code == 0, result.output
        doc = json.loads(out.read_text())
        assert doc["type"] == "FeatureCollection"
        members = members_from_geojson(doc)
        assert len(members) == 25
        assert {m["mode"] for m in members} <= {"walk", "drive"}
        assert len({m["handle"] for m in members}) == 25

    def test_same_seed_writes_the_same_file(
        self, runner: CliRunner, helsinki_dir: Path, tmp_path: Path
    ) -> None:
        outs = [tmp_path / "a.json", tmp_path / "b.json"]
        for out in outs:
            args = ["--graph-dir", str(helsinki_dir), "--n", "15", "--seed", "9", "--out", str(out)]
            assert runner.invoke(_app(), args).exit_code == 0
        assert outs[0].read_text() == outs[1].read_text()
        assert isinstance(json.loads(outs[0].read_text()), list)

    def test_mode_mix_and_role_shares_are_passed_through(
        self, runner: CliRunner, helsinki_dir: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "walkers.json"
        args = ["--graph-dir", str(helsinki_dir), "--n", "20", "--out", str(out)]
        args += ["--modes", "walk=1", "--responder-share", "0.5", "--defense-share", "0"]
        assert runner.invoke(_app(), args).exit_code == 0
        members = json.loads(out.read_text())
        assert {m["mode"] for m in members} == {"walk"}
        assert sum("responder" in m["roles"] for m in members) == 10
        assert not any("defense" in m["roles"] for m in members)

    def test_graph_dir_and_source_together_is_a_usage_error(
        self, runner: CliRunner, helsinki_dir: Path, tmp_path: Path
    ) -> None:
        args = ["--graph-dir", str(helsinki_dir), "--source", str(HELSINKI), "--n", "3"]
        result = runner.invoke(_app(), [*args, "--out", str(tmp_path / "x.json")])
        assert result.exit_code == 2
        assert not (tmp_path / "x.json").exists()

    def test_unknown_output_suffix_is_a_usage_error(
        self, runner: CliRunner, helsinki_dir: Path, tmp_path: Path
    ) -> None:
        args = ["--graph-dir", str(helsinki_dir), "--n", "3", "--out", str(tmp_path / "x.csv")]
        assert runner.invoke(_app(), args).exit_code == 2

    def test_load_without_token_is_a_usage_error(
        self, runner: CliRunner, helsinki_dir: Path, tmp_path: Path
    ) -> None:
        args = ["--graph-dir", str(helsinki_dir), "--n", "3", "--out", str(tmp_path / "x.json")]
        result = runner.invoke(
            _app(), [*args, "--load", "http://127.0.0.1:9"], env={"ERN_TOKEN": ""}
        )
        assert result.exit_code == 2


class TestMembersApiAcceptsTheBodies:
    def test_bodies_validate_and_pass_the_service_geometry_limits(self, helsinki_dir: Path) -> None:
        from geo.graph import load_graphs

        limits = {name: f.default for name, f in Settings.model_fields.items()}
        members = synth_members(load_graphs(helsinki_dir), 60, seed=2)
        for body in members:
            parsed = MemberCreate.model_validate(body)
            zones = [parsed.home_zone, *(z.area for z in parsed.zones)]
            for zone in zones:
                assert zone is not None
                count_vertices(zone.coordinates, label="z", max_vertices=limits["max_vertices"])
                check_area(
                    zone.to_shapely(),
                    min_m2=limits["min_zone_m2"],
                    max_m2=limits["max_zone_m2"],
                )
            for route in parsed.routes:
                count_vertices(
                    [route.path.coordinates], label="r", max_vertices=limits["max_vertices"]
                )
                check_length(route.path.to_shapely(), max_m=limits["max_route_m"])
            assert parsed.model_dump(mode="json", exclude_unset=True)["handle"] == body["handle"]

    def test_bodies_lie_inside_the_service_area_of_the_graphs_they_come_from(
        self, graphs: Any, settings: Settings
    ) -> None:
        """`ern synth --load` against a server on the same graphs: no member is refused."""
        from api.members.service import _placed
        from api.members.service_area import check_member_geometry

        members = synth_members({m: graphs.get(m).graph for m in graphs.by_mode}, 300, seed=5)
        modes = set()
        for body in members:
            parsed = MemberCreate.model_validate(body)
            modes.add(parsed.mode)
            placed = _placed(home_zone=parsed.home_zone, zones=parsed.zones, routes=parsed.routes)
            check_member_geometry(graphs, settings, mode=parsed.mode, placed=placed)
        assert modes == {"walk", "bike", "drive"}


class TestBulkLoad:
    def test_members_are_created_and_their_tokens_work(
        self, helsinki_dir: Path, client: Any, coordinator: tuple[Any, str]
    ) -> None:
        from geo.graph import load_graphs

        members = synth_members(load_graphs(helsinki_dir), 12, seed=31, handle_prefix="bulk-")
        result = bulk_load(
            members, "http://testserver", coordinator[1], client=client, concurrency=1
        )
        assert result.failed == []
        assert [row["handle"] for row in result.created] == [m["handle"] for m in members]
        row = result.created[3]
        me = client.get(
            f"/v1/members/{row['id']}", headers={"Authorization": f"Bearer {row['token']}"}
        )
        assert me.status_code == 200
        body = me.json()
        assert body["handle"] == members[3]["handle"]
        assert len(body["routes"]) == len(members[3]["routes"])

    def test_duplicates_and_bad_tokens_are_reported_not_raised(
        self, helsinki_dir: Path, client: Any, coordinator: tuple[Any, str]
    ) -> None:
        from geo.graph import load_graphs

        members = synth_members(load_graphs(helsinki_dir), 3, seed=32, handle_prefix="dup-")
        first = bulk_load(
            members, "http://testserver", coordinator[1], client=client, concurrency=1
        )
        assert len(first.created) == 3
        again = bulk_load(
            members, "http://testserver", coordinator[1], client=client, concurrency=1
        )
        assert [row["status"] for row in again.failed] == [409, 409, 409]
        denied = bulk_load(
            members, "http://testserver", "not-a-token", client=client, concurrency=1
        )
        assert [row["status"] for row in denied.failed] == [401, 401, 401]


class TestModeMix:
    def test_parses_shares(self) -> None:
        assert _parse_mix("walk=0.5, drive=0.5") == {"walk": 0.5, "drive": 0.5}
        assert _parse_mix("bike") == {"bike": 1.0}

    def test_bad_share_is_refused(self) -> None:
        with pytest.raises(typer.BadParameter):
            _parse_mix("walk=lots")
