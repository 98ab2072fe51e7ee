"""The MP catalogue: one row per registered artefact, holding both SM-signed IDs.

SQLite through SQLAlchemy by default (any SQLAlchemy URL works, PostgreSQL included). A row is
written only as the last step of a registration, in one transaction, so a failed registration
leaves no trace here; the artefact name is the primary key, so two racing registrations of one
name cannot both succeed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Integer, String, Text, create_engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bonseyes_py import safejson
from bonseyes_py.mp.errors import RegistrationError


class Base(DeclarativeBase):
    pass


class ArtefactRow(Base):
    __tablename__ = "artefacts"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    artefact_id: Mapped[str] = mapped_column(Text)  # JWS signed by SM
    image_id: Mapped[str] = mapped_column(Text)  # JWS over the manifest digest, signed by SM
    digest: Mapped[str] = mapped_column(String(71), unique=True)
    repository: Mapped[str] = mapped_column(String(255))
    registry_address: Mapped[str] = mapped_column("registry", String(255))
    policies: Mapped[str] = mapped_column(Text)  # JSON
    original: Mapped[str] = mapped_column(Text)  # JSON: entrypoint, cmd, env, workdir, user
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Artefact:
    name: str
    owner: str
    artefact_id: str
    image_id: str
    digest: str
    repository: str
    registry: str
    policies: dict[str, Any]
    original: dict[str, Any]
    size: int
    created_at: dt.datetime

    @property
    def reference(self) -> str:
        """What a host pulls: by digest only, never by tag."""
        return f"{self.registry}/{self.repository}@{self.digest}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "owner": self.owner, "artefact_id": self.artefact_id, "image_id": self.image_id,
                "digest": self.digest, "reference": self.reference, "policies": self.policies,
                "original": self.original, "size": self.size, "created_at": self.created_at.isoformat()}

    @classmethod
    def from_row(cls, row: ArtefactRow) -> Artefact:
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=dt.UTC)
        return cls(name=row.name, owner=row.owner, artefact_id=row.artefact_id, image_id=row.image_id,
                   digest=row.digest, repository=row.repository, registry=row.registry_address,
                   policies=safejson.loads_object(row.policies, what=f"catalogue policies of {row.name}"),
                   original=safejson.loads_object(row.original, what=f"catalogue original settings of {row.name}"),
                   size=row.size,
                   created_at=created)


class Catalogue:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        Base.metadata.create_all(self.engine)

    @classmethod
    def sqlite(cls, path: Path | str) -> Catalogue:
        return cls(f"sqlite:///{Path(path)}")

    def get(self, name: str) -> Artefact | None:
        with Session(self.engine) as session:
            row = session.get(ArtefactRow, name)
            return Artefact.from_row(row) if row else None

    def list(self, owner: str | None = None) -> list[Artefact]:
        with Session(self.engine) as session:
            query = select(ArtefactRow).order_by(ArtefactRow.name)
            if owner is not None:
                query = query.where(ArtefactRow.owner == owner)
            return [Artefact.from_row(row) for row in session.scalars(query)]

    def add(self, artefact: Artefact) -> None:
        row = ArtefactRow(name=artefact.name, owner=artefact.owner, artefact_id=artefact.artefact_id,
                          image_id=artefact.image_id, digest=artefact.digest, repository=artefact.repository,
                          registry_address=artefact.registry, policies=json.dumps(artefact.policies, sort_keys=True),
                          original=json.dumps(artefact.original, sort_keys=True), size=artefact.size,
                          created_at=artefact.created_at)
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
        except IntegrityError as exc:
            raise RegistrationError(f"artefact name {artefact.name!r} was registered meanwhile",
                                    check="name-taken") from exc

    def count(self) -> int:
        with Session(self.engine) as session:
            return len(session.scalars(select(ArtefactRow.name)).all())
