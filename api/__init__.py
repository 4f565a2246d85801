"""ern HTTP service: FastAPI, persistence and orchestration."""
