"""Shared constrained types: Lon, Lat, Seconds, GeoJSON (RFC 7946), times of day, days, text."""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema
from shapely.geometry import LineString as ShapelyLineString
from shapely.geometry import Point as ShapelyPoint
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.geometry.polygon import orient

from geo.validate import linestring_from_positions, polygon_from_rings


def _no_nul(value: str) -> str:
    if "\x00" in value:
        msg = "must not contain NUL (U+0000) characters"
        raise ValueError(msg)
    return value


# Free text that is stored: PostgreSQL text and jsonb cannot hold U+0000 (a 500 otherwise).
NoNul = AfterValidator(_no_nul)
PlainText = Annotated[str, NoNul]
# A pattern put after PlainText is enforced but missing from the OpenAPI input schema (pydantic):
# patterned free text is Annotated[str, StringConstraints(pattern=...), NoNul].

# Strict: "8.69" or true are not coordinates; allow_inf_nan=False also refuses a JSON NaN literal.
Lon = Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False, strict=True)]
Lat = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False, strict=True)]
Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
# RFC 7946 position: [lon, lat] in WGS84 (ern takes no altitude).
Position = tuple[Lon, Lat]
# A hard cap on list lengths so that a geometry never explodes memory before the real checks.
MAX_POSITIONS = 100_000
MAX_RINGS = 100

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAY_ORDER: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _parse_hhmm(value: Any) -> Any:
    if isinstance(value, time):
        return value.replace(second=0, microsecond=0, tzinfo=None)
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        msg = f"expected a local time of day as 'HH:MM' (00:00-23:59), got {value!r}"
        raise ValueError(msg)
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


TimeOfDay = Annotated[
    time,
    BeforeValidator(_parse_hhmm),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$", "examples": ["09:00"]}
    ),
]
"""A local time of day in ERN_TIMEZONE, "HH:MM"."""


def _distinct_days(days: list[str]) -> list[str]:
    if len(set(days)) != len(days):
        msg = "days must not repeat"
        raise ValueError(msg)
    return sorted(days, key=DAY_ORDER.index)


Days = Annotated[list[Day], Field(min_length=1, max_length=7), AfterValidator(_distinct_days)]
"""A non-empty set of weekdays, without repeats, returned in week order."""


def _iso_text(value: Any) -> Any:
    # pydantic's lax datetimes take a JSON number as a Unix time: only ISO 8601 text is a time.
    if isinstance(value, int | float):
        msg = "expected an ISO 8601 date and time as text, e.g. '2026-12-02T18:30:00Z'"
        raise ValueError(msg)
    return value


_TIME_TYPES = frozenset({"datetime", "date", "time", "timedelta"})
# JSON may escape a lone UTF-16 surrogate ("\\ud800"): Python keeps it in the str, and UTF-8
# (psycopg, the logs, the outbox) cannot encode it. Refused in every request text.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_unicode(value: Any) -> Any:
    if isinstance(value, str) and _SURROGATE.search(value):
        msg = "must be valid Unicode text: a lone surrogate (e.g. \\ud800) cannot be stored"
        raise ValueError(msg)
    return value


def _no_coercion(node: Any) -> Any:
    """The core schema with strict bools and numbers, times that refuse JSON numbers, and text
    that refuses lone surrogates."""
    if isinstance(node, list):
        return [_no_coercion(item) for item in node]
    if not isinstance(node, dict):
        return node
    function = node.get("function")
    if isinstance(function, dict) and function.get("function") is _iso_text:
        return node  # a nested model's schema, already done
    node = {key: _no_coercion(value) for key, value in node.items()}
    kind = node.get("type")
    if not isinstance(kind, str):
        return node  # a field named "type", not a schema
    if kind in ("bool", "int", "float"):
        node["strict"] = True
    elif kind in _TIME_TYPES:
        return core_schema.no_info_before_validator_function(_iso_text, node)
    elif kind == "str":
        return core_schema.no_info_before_validator_function(_valid_unicode, node)
    return node


class RequestModel(BaseModel):
    """Base of every request body: no unknown fields, no silent coercion between JSON types.

    A bool takes only true/false, a number no string or bool, an int no fraction, a time only
    ISO 8601 text; ISO strings, UUID strings and GeoJSON arrays are taken as the API documents
    (model-wide ``strict=True`` would refuse those: FastAPI validates bodies as Python objects).
    tests/api/test_strict_inputs.py fails if a route's body model does not derive from it.
    """

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        schema: CoreSchema = _no_coercion(handler(source))
        return schema


_Strict = RequestModel


class TimeWindow(_Strict):
    """A daily window of local times; start > end crosses midnight, start == end is refused."""

    start: TimeOfDay
    end: TimeOfDay

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            msg = (
                "start and end are equal: the window would be empty (or the whole day); "
                "a window crossing midnight has start > end, e.g. 22:00-06:00"
            )
            raise ValueError(msg)
        return self

    def contains(self, at: time) -> bool:
        """Whether local time ``at`` is inside [start, end), across midnight too."""
        if self.start < self.end:
            return self.start <= at < self.end
        return at >= self.start or at < self.end


class Point(_Strict):
    """GeoJSON Point: [lon, lat] in WGS84."""

    type: Literal["Point"]
    coordinates: Position

    @property
    def lon(self) -> float:
        return self.coordinates[0]

    @property
    def lat(self) -> float:
        return self.coordinates[1]

    def to_shapely(self) -> ShapelyPoint:
        """The Shapely point."""
        return ShapelyPoint(self.coordinates)

    @classmethod
    def from_shapely(cls, geom: ShapelyPoint) -> Point:
        """From a Shapely point."""
        return cls(type="Point", coordinates=(float(geom.x), float(geom.y)))


class LineString(_Strict):
    """GeoJSON LineString: at least two distinct [lon, lat] positions."""

    type: Literal["LineString"]
    coordinates: Annotated[list[Position], Field(min_length=2, max_length=MAX_POSITIONS)]

    @model_validator(mode="after")
    def _valid(self) -> Self:
        linestring_from_positions(self.coordinates, label="LineString")
        return self

    def to_shapely(self) -> ShapelyLineString:
        """The Shapely line string."""
        return ShapelyLineString(self.coordinates)

    @classmethod
    def from_shapely(cls, geom: ShapelyLineString) -> LineString:
        """From a Shapely line string."""
        return cls.model_construct(
            type="LineString", coordinates=[(float(x), float(y)) for x, y, *_ in geom.coords]
        )


class Polygon(_Strict):
    """GeoJSON Polygon: closed rings (exterior first, holes allowed), valid (no self-crossing)."""

    type: Literal["Polygon"]
    coordinates: Annotated[
        list[Annotated[list[Position], Field(max_length=MAX_POSITIONS)]],
        Field(min_length=1, max_length=MAX_RINGS),
    ]

    @model_validator(mode="after")
    def _valid(self) -> Self:
        polygon_from_rings(self.coordinates, label="Polygon")
        return self

    def to_shapely(self) -> ShapelyPolygon:
        """The Shapely polygon."""
        return ShapelyPolygon(self.coordinates[0], self.coordinates[1:])

    @classmethod
    def from_shapely(cls, geom: ShapelyPolygon) -> Polygon:
        """From a Shapely polygon."""
        # RFC 7946: exterior rings counterclockwise, holes clockwise.
        geom = orient(geom, sign=1.0)
        rings = [geom.exterior, *geom.interiors]
        return cls.model_construct(
            type="Polygon",
            coordinates=[[(float(x), float(y)) for x, y, *_ in r.coords] for r in rings],
        )
