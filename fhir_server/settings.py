"""The one settings object of Aegis: environment variables with the ``AEGIS_`` prefix, overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AEGIS_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8080, description="TCP port to listen on.")
    data_dir: Path = Field(Path("./data"), description="Directory of the embedded SQLite store.")
    store: str = Field(
        "",
        description="Storage URL; empty means the embedded SQLite store at sqlite:///DATA_DIR/aegis.db.",
    )
    search: str = Field(
        "",
        description="Elasticsearch URL (http://HOST:9200) that answers searches, fed from the store's outbox; "
        "empty means the store answers searches itself.",
    )
    search_index_prefix: str = Field(
        "aegis", description="Prefix of the Elasticsearch index names (PREFIX_TYPE): lower-case letters, digits, '-'."
    )
    search_fallback: bool = Field(
        True,
        description="While Elasticsearch cannot answer, the store answers searches (true) or they fail with 503 "
        "(false).",
    )
    base_url: str = Field(
        "",
        description="Public FHIR base URL used in links and Location headers; empty derives it from each request.",
    )
    demo: bool = Field(False, description="Load the synthetic demo data set on first start.")
    max_body_bytes: int = Field(32 * 1024 * 1024, description="Largest accepted request body (413 above).")
    page_size: int = Field(50, description="Default _count of history and search pages.")
    max_page_size: int = Field(1000, description="Largest _count a client may ask for.")
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite durability: FULL fsyncs every group commit (survives power loss); NORMAL survives a "
        "process crash only.",
    )
    workers: int = Field(
        1, ge=1,
        description="Serving processes sharing the store and the port (Python serves one request at a time per "
        "process: one core each). Each starts its own prepare processes.",
    )
    prepare_workers: int = Field(
        1, ge=0,
        description="Processes that parse, validate and index large transaction Bundles beside the event loop "
        "(started on first use; 0: all on the event loop). More than the cores minus one rarely helps.",
    )
    prepare_min_bytes: int = Field(
        64 * 1024, ge=0, description="Smallest transaction Bundle (bytes of JSON) sent to a prepare process.")
    log_level: str = Field("info", description="Log level of the server.")
    auth_disabled: bool = Field(
        False,
        description="DEVELOPMENT ONLY: serve the FHIR API without authorization (no tokens needed, no SMART "
        "endpoints); never on a network you do not trust.",
    )
    access_token_lifetime: int = Field(3600, description="Lifetime of access tokens, in seconds.")
    refresh_token_lifetime: int = Field(30 * 24 * 3600, description="Lifetime of offline_access refresh tokens, "
                                        "in seconds (online_access ones end with the access token's day).")
    signing_key_max_age_days: int = Field(90, description="Age after which the id_token signing key is rotated "
                                          "at start-up (the old public key stays in the JWKS).")
    cors_origins: str = Field("", description="Extra browser origins allowed by CORS, comma-separated; the origins "
                              "of registered redirect URIs are always allowed.")

    def store_url(self) -> str:
        return self.store or f"sqlite:///{(self.data_dir / 'aegis.db').resolve()}"
