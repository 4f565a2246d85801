"""Settings: secrets are never placeholders; the embedded default keeps its own private key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from api.main import create_app
from api.settings import InsecureSettings, Settings


class TestSecretKey:
    def test_embedded_default_generates_a_private_key_once(self, tmp_path: Path) -> None:
        settings = Settings(database_url=None, secret_key=None, var_dir=tmp_path)
        first = settings.secret_bytes()
        path = tmp_path / "secret_key"
        assert path.stat().st_mode & 0o077 == 0
        assert len(first) >= 32
        assert (
            Settings(database_url=None, secret_key=None, var_dir=tmp_path).secret_bytes() == first
        )

    def test_a_server_without_a_key_refuses_to_start(self, tmp_path: Path) -> None:
        settings = Settings(
            database_url="postgresql+psycopg://x@/y", secret_key=None, var_dir=tmp_path
        )
        with pytest.raises(InsecureSettings, match="ERN_SECRET_KEY is required"):
            create_app(settings)

    @pytest.mark.parametrize("placeholder", ["changeme", "secret", "x" * 31])
    def test_placeholder_keys_are_refused(self, placeholder: str, tmp_path: Path) -> None:
        settings = Settings(
            database_url="postgresql+psycopg://x@/y", secret_key=placeholder, var_dir=tmp_path
        )
        with pytest.raises(InsecureSettings, match="placeholder"):
            create_app(settings)


def test_unknown_time_zone_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="not an IANA time zone"):
        Settings(timezone="Mars/Olympus")


def test_environment_names_are_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERN_DATABASE_URL", "postgresql+psycopg://u@h/d")
    monkeypatch.setenv("ERN_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("ERN_MIN_ZONE_M2", "50000")
    monkeypatch.setenv("ERN_MAX_SNAP_M", "120")
    monkeypatch.setenv("ERN_MOBILIZATION_S", "30")
    monkeypatch.setenv("ERN_WAVE_TIMEOUT_S", "45")
    monkeypatch.setenv("ERN_MASS_MAX_ETA_S", "900")
    monkeypatch.setenv("ERN_WALK_SPEED_MPS", "1.2")
    monkeypatch.setenv("ERN_BIKE_SPEED_MPS", "5")
    s = Settings()
    assert (s.database_url, s.timezone, s.min_zone_m2, s.max_snap_m) == (
        "postgresql+psycopg://u@h/d",
        "Europe/Berlin",
        50000,
        120,
    )
    assert (s.mobilization_s, s.wave_timeout_s, s.mass_max_eta_s) == (30, 45, 900)
    assert (s.walk_speed_mps, s.bike_speed_mps) == (1.2, 5)
    assert not s.embedded


class TestAlertThreads:
    """ERN_ALERT_THREADS: how many POST /v1/alerts units of work one process runs at once."""

    def test_read_from_the_environment_and_sizes_the_alert_executor(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("ERN_ALERT_THREADS", "3")
        settings = Settings(database_url=None, var_dir=tmp_path)
        assert settings.alert_threads == 3
        app = create_app(settings)
        try:
            assert app.state.alert_executor._max_workers == 3
        finally:
            app.state.alert_executor.shutdown()

    def test_default_is_a_few_threads_whatever_the_pool(self) -> None:
        assert Settings().alert_threads == 4
        assert Settings(db_pool_size=50).alert_threads == 4

    @pytest.mark.parametrize("threads", [0, -1])
    def test_at_least_one(self, threads: int) -> None:
        with pytest.raises(ValidationError, match="alert_threads"):
            Settings(alert_threads=threads)

    def test_more_threads_than_the_pool_can_serve_are_refused(self) -> None:
        # each unit holds a connection: 2 x pool (pool plus overflow) is the most there are
        assert Settings(db_pool_size=2, alert_threads=4).alert_threads == 4
        with pytest.raises(ValidationError, match=r"ERN_ALERT_THREADS=5 .* \(4\)"):
            Settings(db_pool_size=2, alert_threads=5)


class TestHttpConnectionsPerHost:
    """ERN_HTTP_CONNECTIONS_PER_HOST: webhook and SMS requests in flight to one host."""

    def test_read_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert Settings().http_connections_per_host == 32
        monkeypatch.setenv("ERN_HTTP_CONNECTIONS_PER_HOST", "4")
        assert Settings().http_connections_per_host == 4

    @pytest.mark.parametrize("value", ["0", "-1", "1025", "many"])
    def test_out_of_range_is_refused_by_name(
        self, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        monkeypatch.setenv("ERN_HTTP_CONNECTIONS_PER_HOST", value)
        with pytest.raises(ValidationError, match="http_connections_per_host"):
            Settings()
