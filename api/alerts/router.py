"""Placeholder until the alerts domain lands."""

from fastapi import APIRouter

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])
