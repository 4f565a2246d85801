"""Placeholder until the members domain lands."""

from fastapi import APIRouter

router = APIRouter(prefix="/v1/members", tags=["members"])
