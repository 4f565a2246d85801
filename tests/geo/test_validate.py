"""geo.validate: positions, rings, validity, areas, lengths, vertex counts; known answers."""

from __future__ import annotations

import math

import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo.errors import InvalidGeometry
from geo.validate import (
    area_m2,
    check_area,
    check_length,
    check_positions,
    count_vertices,
    length_m,
    linestring_from_positions,
    polygon_from_rings,
)

LON, LAT = 24.9384, 60.1699
M_PER_DEG_LAT = 111_320.0


def _square(side_m: float, lon: float = LON, lat: float = LAT) -> list[list[float]]:
    dlat = side_m / 2 / M_PER_DEG_LAT
    dlon = side_m / 2 / (M_PER_DEG_LAT * math.cos(math.radians(lat)))
    return [
        [lon - dlon, lat - dlat],
        [lon + dlon, lat - dlat],
        [lon + dlon, lat + dlat],
        [lon - dlon, lat + dlat],
        [lon - dlon, lat - dlat],
    ]


class TestCheckPositions:
    def test_returns_an_n_by_2_array(self) -> None:
        arr = check_positions([[1.0, 2.0], [3.0, 4.0]])
        assert arr.shape == (2, 2)
        assert arr[1, 0] == 3.0

    @pytest.mark.parametrize(
        ("coords", "needle"),
        [
            ([[181.0, 0.0]], "longitude 181.0 is outside [-180, 180]"),
            ([[-180.5, 0.0]], "longitude -180.5"),
            ([[0.0, 90.01]], "latitude 90.01 is outside [-90, 90]"),
            ([[0.0, math.nan]], "not a finite number"),
            ([[math.inf, 0.0]], "not a finite number"),
            ([[0.0, 0.0, 0.0]], "[lon, lat] pairs"),
            ([["a", 0.0]], "[lon, lat] pairs"),
        ],
    )
    def test_refuses_bad_positions_naming_the_problem(self, coords: object, needle: str) -> None:
        with pytest.raises(InvalidGeometry, match="home_zone") as err:
            check_positions(coords, label="home_zone")
        assert needle in str(err.value)

    def test_accepts_the_bounds_themselves(self) -> None:
        assert check_positions([[-180.0, -90.0], [180.0, 90.0]]).shape == (2, 2)


class TestPolygonFromRings:
    def test_builds_a_valid_polygon(self) -> None:
        polygon = polygon_from_rings([_square(300.0)])
        assert polygon.is_valid
        assert polygon.exterior.coords[0] == tuple(_square(300.0)[0])

    def test_unclosed_ring_is_refused(self) -> None:
        ring = [*_square(300.0)[:-1], [LON, LAT + 0.01]]
        with pytest.raises(InvalidGeometry, match="ring 0 is not closed"):
            polygon_from_rings([ring])

    def test_bow_tie_is_refused_as_self_intersecting(self) -> None:
        bow_tie = [[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
        with pytest.raises(
            InvalidGeometry, match=r"self-intersection at lon 0\.500000, lat 0\.500000"
        ):
            polygon_from_rings([bow_tie])

    def test_ring_with_three_positions_is_refused(self) -> None:
        with pytest.raises(InvalidGeometry, match="at least 4"):
            polygon_from_rings([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])

    def test_degenerate_ring_of_repeated_points_is_refused(self) -> None:
        with pytest.raises(InvalidGeometry, match="3 distinct"):
            polygon_from_rings([[[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])

    def test_no_ring_is_refused(self) -> None:
        with pytest.raises(InvalidGeometry, match="exterior ring"):
            polygon_from_rings([])

    def test_hole_inside_the_shell_is_allowed(self) -> None:
        polygon = polygon_from_rings([_square(600.0), _square(200.0)[::-1]])
        assert len(polygon.interiors) == 1
        assert area_m2(polygon) == pytest.approx(600.0**2 - 200.0**2, rel=0.01)

    def test_hole_outside_the_shell_is_refused(self) -> None:
        far_hole = _square(100.0, lon=LON + 0.1)
        with pytest.raises(InvalidGeometry, match="hole lies outside shell"):
            polygon_from_rings([_square(300.0), far_hole])

    def test_bad_position_in_a_hole_names_the_ring(self) -> None:
        hole = _square(100.0)
        hole[1] = [LON, 95.0]
        with pytest.raises(InvalidGeometry, match=r"ring 1: position 1: latitude 95\.0"):
            polygon_from_rings([_square(300.0), hole], label="zone")

    def test_vertex_limit_counts_all_rings(self) -> None:
        rings = [_square(600.0), _square(200.0)[::-1]]
        assert polygon_from_rings(rings, max_vertices=10).is_valid
        with pytest.raises(InvalidGeometry, match="10 vertices; at most 9"):
            polygon_from_rings(rings, max_vertices=9)


class TestLinestringFromPositions:
    def test_builds_a_line(self) -> None:
        line = linestring_from_positions([[LON, LAT], [LON + 0.01, LAT]])
        assert line.length == pytest.approx(0.01)

    def test_single_position_is_refused(self) -> None:
        with pytest.raises(InvalidGeometry, match="at least 2 positions"):
            linestring_from_positions([[LON, LAT]])

    def test_repeated_single_point_is_refused(self) -> None:
        with pytest.raises(InvalidGeometry, match="2 distinct"):
            linestring_from_positions([[LON, LAT], [LON, LAT]])

    def test_self_crossing_round_trip_is_allowed(self) -> None:
        line = linestring_from_positions([[0, 0], [1, 1], [1, 0], [0, 1]])
        assert not line.is_simple

    def test_vertex_limit(self) -> None:
        with pytest.raises(InvalidGeometry, match="3 vertices; at most 2"):
            linestring_from_positions([[0, 0], [1, 1], [2, 2]], max_vertices=2)


class TestAreaAndLength:
    @pytest.mark.parametrize("side_m", [100.0, 300.0, 2000.0])
    def test_area_of_a_square_is_its_side_squared(self, side_m: float) -> None:
        assert area_m2(polygon_from_rings([_square(side_m)])) == pytest.approx(side_m**2, rel=0.01)

    def test_area_is_measured_in_metres_near_the_equator_and_far_north(self) -> None:
        south = polygon_from_rings([_square(500.0, lon=-58.4, lat=-34.6)])
        north = polygon_from_rings([_square(500.0, lon=18.9, lat=69.6)])
        assert area_m2(south) == pytest.approx(250_000.0, rel=0.01)
        assert area_m2(north) == pytest.approx(250_000.0, rel=0.01)

    def test_length_of_a_degree_of_latitude(self) -> None:
        line = linestring_from_positions([[LON, 60.0], [LON, 61.0]])
        assert length_m(line) == pytest.approx(111_400.0, rel=0.005)

    def test_small_zone_is_refused_with_both_numbers(self) -> None:
        polygon = polygon_from_rings([_square(100.0)])
        with pytest.raises(
            InvalidGeometry, match=r"home_zone: area is 10,0\d\d m²; at least 40,000"
        ):
            check_area(polygon, label="home_zone", min_m2=40_000.0)

    def test_large_zone_is_refused(self) -> None:
        polygon = polygon_from_rings([_square(6000.0)])
        with pytest.raises(InvalidGeometry, match="at most 25,000,000 m²"):
            check_area(polygon, max_m2=25_000_000.0)

    def test_zone_inside_the_bounds_returns_its_area(self) -> None:
        polygon = polygon_from_rings([_square(300.0)])
        assert check_area(polygon, min_m2=40_000.0, max_m2=25e6) == pytest.approx(90_000, rel=0.01)

    def test_whole_world_polygon_is_too_large(self) -> None:
        world = [[-179.0, -89.0], [179.0, -89.0], [179.0, 89.0], [-179.0, 89.0], [-179.0, -89.0]]
        with pytest.raises(InvalidGeometry, match="at most"):
            check_area(polygon_from_rings([world]), max_m2=25e6)

    def test_long_route_is_refused(self) -> None:
        line = linestring_from_positions([[LON, 60.0], [LON, 61.0]])
        with pytest.raises(InvalidGeometry, match=r"routes\.0\.path: length is 111,"):
            check_length(line, label="routes.0.path", max_m=100_000.0)
        assert check_length(line, max_m=120_000.0) == pytest.approx(111_400.0, rel=0.005)

    def test_count_vertices(self) -> None:
        assert count_vertices([[1, 2, 3], [4]], label="g", max_vertices=4) == 4
        with pytest.raises(InvalidGeometry, match="g: 4 vertices; at most 3"):
            count_vertices([[1, 2, 3], [4]], label="g", max_vertices=3)


coordinate = st.one_of(
    st.floats(min_value=-200, max_value=200),
    st.sampled_from([0.0, 1.0, -180.0, 180.0, 90.0, -90.0, 1e308, -1e308, math.nan, math.inf]),
)
position = st.lists(coordinate, min_size=1, max_size=3)
ring = st.lists(position, min_size=0, max_size=12)


class TestHostileInput:
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rings=st.lists(ring, min_size=0, max_size=3), closed=st.booleans())
    def test_polygon_is_valid_or_refused_with_invalid_geometry(
        self, rings: list[list[list[float]]], closed: bool
    ) -> None:
        if closed:
            rings = [[*r, r[0]] if r else r for r in rings]
        try:
            polygon = polygon_from_rings(rings, max_vertices=2000)
        except InvalidGeometry as exc:
            assert str(exc).startswith("geometry: ")
            return
        # What passes is exactly what PostGIS's ST_IsValid accepts (both are GEOS).
        assert polygon.is_valid
        assert shapely.get_coordinates(polygon).shape[0] >= 4
        assert math.isfinite(polygon.area)
