"""Tables of the Security Manager (SQLAlchemy 2 declarative).

Times are epoch seconds as floats except in the audit log, which uses integer milliseconds so its
canonical JSON (and therefore its hash chain) is identical on SQLite and PostgreSQL.
The schema changes only through alembic revisions in ``bonseyes_py/sm/migrations``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    organisation: Mapped[str] = mapped_column(String(256), default="")
    role: Mapped[str] = mapped_column(String(16))  # user or admin
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class Certificate(Base):
    """Every leaf the SM issued, so revoking a user, host or runtime finds its serials."""

    __tablename__ = "certificates"
    serial: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex
    role: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    not_after: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class Host(Base):
    __tablename__ = "hosts"
    host_id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host_name_for(hardware_id)
    hardware_id: Mapped[str] = mapped_column(String(80), unique=True)
    owner: Mapped[str] = mapped_column(String(128), ForeignKey("users.user_id"))
    host_id_token: Mapped[str] = mapped_column(Text)
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    gpu_models: Mapped[list[str]] = mapped_column(JSON, default=list)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    bm_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_seen: Mapped[float | None] = mapped_column(Float, nullable=True)
    online_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class Premise(Base):
    __tablename__ = "premises"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    policy: Mapped[str] = mapped_column(Text)
    policy_digest: Mapped[str] = mapped_column(String(80))
    updated_at: Mapped[float] = mapped_column(Float)


class PolicyRevision(Base):
    __tablename__ = "policy_revisions"
    premise: Mapped[str] = mapped_column(String(128), ForeignKey("premises.name"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy: Mapped[str] = mapped_column(Text)
    policy_digest: Mapped[str] = mapped_column(String(80))
    author: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Float)


class PremiseUser(Base):
    __tablename__ = "premise_users"
    premise: Mapped[str] = mapped_column(String(128), ForeignKey("premises.name"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), ForeignKey("users.user_id"), primary_key=True)


class PremiseHost(Base):
    __tablename__ = "premise_hosts"
    premise: Mapped[str] = mapped_column(String(128), ForeignKey("premises.name"), primary_key=True)
    host_id: Mapped[str] = mapped_column(String(128), ForeignKey("hosts.host_id"), primary_key=True)


class Artefact(Base):
    __tablename__ = "artefacts"
    artefact_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), ForeignKey("users.user_id"))
    artefact_id_token: Mapped[str] = mapped_column(Text)
    requires_gpu: Mapped[bool] = mapped_column(Boolean, default=False)
    max_instances: Mapped[int] = mapped_column(Integer, default=0)
    allowed_premises: Mapped[list[str]] = mapped_column(JSON, default=list)
    allowed_hosts: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")  # empty = any host
    not_before: Mapped[int] = mapped_column(BigInteger, default=0)
    not_after: Mapped[int] = mapped_column(BigInteger, default=0)
    licence_seconds: Mapped[int] = mapped_column(Integer, default=0)  # 0 = the SM default
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Float)


class Image(Base):
    __tablename__ = "images"
    digest: Mapped[str] = mapped_column(String(80), primary_key=True)
    artefact_id: Mapped[str] = mapped_column(String(128), ForeignKey("artefacts.artefact_id"), index=True)
    image_id_token: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class Pipeline(Base):
    __tablename__ = "pipelines"
    pipeline_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), ForeignKey("users.user_id"), index=True)
    premise: Mapped[str] = mapped_column(String(128), ForeignKey("premises.name"))
    status: Mapped[str] = mapped_column(String(16))  # verifying, ready, aborted
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)


class PipelineStage(Base):
    __tablename__ = "pipeline_stages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline_id: Mapped[str] = mapped_column(String(64), ForeignKey("pipelines.pipeline_id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    artefact_id: Mapped[str] = mapped_column(String(128), ForeignKey("artefacts.artefact_id"))
    digest: Mapped[str] = mapped_column(String(80))
    host_id: Mapped[str] = mapped_column(String(128), ForeignKey("hosts.host_id"), index=True)
    reported_digest: Mapped[str | None] = mapped_column(String(80), nullable=True)


class Licence(Base):
    """Host and artefact licences; the response a client received is kept (encrypted) for replays."""

    __tablename__ = "licences"
    __table_args__ = (UniqueConstraint("request_key", name="uq_licences_request_key"),
                      # Covers the running-instances count (migration 0002).
                      Index("ix_licences_runtime", "artefact_id", "kind", "host_id", "nonce", "expires_at",
                            "revoked_at"))
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # host or artefact
    request_key: Mapped[str] = mapped_column(String(64))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    host_id: Mapped[str] = mapped_column(String(128), index=True)
    user_id: Mapped[str] = mapped_column(String(128))
    artefact_id: Mapped[str] = mapped_column(String(128), index=True)
    digest: Mapped[str] = mapped_column(String(80))
    nonce: Mapped[str] = mapped_column(String(128))
    runtime_name: Mapped[str] = mapped_column(String(64))
    runtime_thumbprint: Mapped[str] = mapped_column(String(64))
    host_licence_jti: Mapped[str | None] = mapped_column(String(64), nullable=True)
    renews: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pipeline_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    policy_revision: Mapped[str] = mapped_column(String(80))
    issued_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    response: Mapped[bytes] = mapped_column(LargeBinary)
    # The seq of the audit entry written with this licence (migration 0004): a complete, ordered change
    # feed of issued licences for the running-instances count (``licensing.InstanceTracker``).
    audit_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(String(16))
    policy_revision: Mapped[str | None] = mapped_column(String(80), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row: the last sequence number and hash; locking it serialises appends to the chain."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    entry_hash: Mapped[str] = mapped_column(String(64))


class SMState(Base):
    """One row: ``generation`` grows with every write that may change what the licence path caches."""

    __tablename__ = "sm_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)


class PipelineRuntimeRecord(Base):
    """Per-stage progress of a started pipeline (``pipeline_runtime.py``; migration 0003)."""

    __tablename__ = "pipeline_runtimes"
    pipeline_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)  # pending, starting, running, failed, stopped
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    runtime_name: Mapped[str | None] = mapped_column(String(64), nullable=True, default="")
    nonce: Mapped[str | None] = mapped_column(String(160), nullable=True, default="")
    detail: Mapped[str | None] = mapped_column(Text, nullable=True, default="")
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True, default=0.0)
    timings: Mapped[str | None] = mapped_column(Text, nullable=True, default="{}")
    updated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
