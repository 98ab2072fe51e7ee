"""Policy attributes filled from SM records (never from what a client claims)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bonseyes_py.policy import HostAttributes, UserAttributes
from bonseyes_py.sm.hosts import host_available
from bonseyes_py.sm.models import Host, PremiseHost, User


def user_attributes(user: User) -> UserAttributes:
    return UserAttributes(user_id=user.user_id, organisation=user.organisation)


def host_attributes(session: Any, host: Host, now: float, ttl: float) -> HostAttributes:
    premises = session.execute(select(PremiseHost.premise).where(PremiseHost.host_id == host.host_id)).scalars()
    return HostAttributes(host_id=host.host_id, owner=host.owner, premises=tuple(sorted(premises)),
                          gpu_count=host.gpu_count, gpu_models=tuple(host.gpu_models),
                          available=host_available(host, now, ttl))
