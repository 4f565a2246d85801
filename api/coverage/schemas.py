"""Coverage answers: GeoJSON FeatureCollections (RFC 7946) with an ``ern`` member of parameters."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["all", "walk", "bike", "drive"]


class Polygon(BaseModel):
    type: Literal["Polygon"] = "Polygon"
    coordinates: list[list[list[float]]]


class PointGeometry(BaseModel):
    type: Literal["Point"] = "Point"
    coordinates: list[float]


class CellProperties(BaseModel):
    """One H3 cell; times rounded to the minute (null: nobody within the search horizon)."""

    model_config = ConfigDict(extra="forbid")

    h3: str
    t1_s: float | None
    tk_s: float | None
    responders_within: int | str = Field(description="an integer >= ERN_K_ANON, or '<3'")
    p_covered: float
    street_m: float
    gap: bool


class CellFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: Polygon
    properties: CellProperties


class CoverageMeta(BaseModel):
    """The parameters the answer was computed with, and when."""

    at: datetime | None = None
    mode: Mode
    minutes: float
    k: int
    res: int | None = None
    n: int | None = None
    hours: list[int] | None = None
    weight: Literal["street", "alerts"] | None = None
    k_anon: int
    target: float
    computed_at: datetime
    cached: bool


class CoverageCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[CellFeature]
    ern: CoverageMeta


class RecruitProperties(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rank: int
    gain_m: float = Field(description="street metres newly covered, mean over the hours")
    gain_share: float = Field(description="gain_m as a share of the network's street length")
    h3: str


class RecruitFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: PointGeometry
    properties: RecruitProperties


class RecruitCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[RecruitFeature]
    ern: CoverageMeta


class PublicProperties(BaseModel):
    model_config = ConfigDict(extra="forbid")

    h3: str
    gap: bool


class PublicFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: Polygon
    properties: PublicProperties


class PublicMeta(BaseModel):
    res: int
    computed_at: datetime


class PublicCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[PublicFeature]
    ern: PublicMeta


class ProfileHourRead(BaseModel):
    """One hour of the week (0 = Monday 00:00-01:00, network time zone)."""

    hour: int
    day: str
    hour_of_day: int
    covered_share: float
    mean_p_covered: float
    gap_cells: int
    alerts: int
    alerts_covered_share: float | None


class ProfileRead(BaseModel):
    hours: list[ProfileHourRead]
    ern: CoverageMeta
