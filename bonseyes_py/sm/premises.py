"""Virtual premises: members (users allowed to run pipelines, hosts that serve them) and a Cedar policy.

A policy text is validated against the schema before it is accepted; each accepted change of text
is a new revision, kept forever, and decisions record the revision digest that decided them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from bonseyes_py.pki.roles import Identity, check_name
from bonseyes_py.policy import DEFAULT_POLICY, PremiseAttributes, policy_revision
from bonseyes_py.sm.core import SMCore, check_str_list, found
from bonseyes_py.sm.models import Host, PolicyRevision, Premise, PremiseHost, PremiseUser, User
from bonseyes_py.web.errors import NotFoundError


def premise_attributes(session: Any, premise: Premise) -> PremiseAttributes:
    users = session.execute(select(PremiseUser.user_id).where(PremiseUser.premise == premise.name)).scalars()
    return PremiseAttributes(name=premise.name, members=tuple(sorted(users)))


class PremiseOperations(SMCore):
    def put_premise(self, actor: Identity, name: str, *, policy: str | None = None,
                    users: list[str] | None = None, hosts: list[str] | None = None) -> dict[str, Any]:
        check_name(name, "premise")
        if users is not None:
            users = check_str_list(users, "users", limit=10_000)
        if hosts is not None:
            hosts = check_str_list(hosts, "hosts", limit=10_000)
        if policy is not None:
            self.policy.validate(policy)
        with self.transaction() as session:
            premise = session.get(Premise, name)
            text = policy if policy is not None else (premise.policy if premise else DEFAULT_POLICY)
            digest = policy_revision(text)
            changed = premise is None or premise.policy_digest != digest
            if premise is None:
                premise = Premise(name=name, revision=1, policy=text, policy_digest=digest, updated_at=self.now())
                session.add(premise)
            elif changed:
                premise.revision += 1
                premise.policy = text
                premise.policy_digest = digest
                premise.updated_at = self.now()
            session.flush()
            if changed:
                session.add(PolicyRevision(premise=name, revision=premise.revision, policy=text, policy_digest=digest,
                                           author=actor.uri, created_at=self.now()))
            if users is not None:
                for user_id in users:
                    if session.get(User, user_id) is None:
                        raise NotFoundError(f"user {user_id!r} does not exist")
                session.execute(delete(PremiseUser).where(PremiseUser.premise == name))
                session.add_all(PremiseUser(premise=name, user_id=u) for u in sorted(set(users)))
            if hosts is not None:
                for host_id in hosts:
                    if session.get(Host, host_id) is None:
                        raise NotFoundError(f"host {host_id!r} does not exist")
                session.execute(delete(PremiseHost).where(PremiseHost.premise == name))
                session.add_all(PremiseHost(premise=name, host_id=h) for h in sorted(set(hosts)))
            session.flush()
            view = self._premise_view(session, premise)
            self.audit(session, actor, "premise-updated", name, policy_revision=digest,
                       revision=premise.revision, policy_changed=changed, users=view["users"], hosts=view["hosts"])
            return view

    @staticmethod
    def _premise_view(session: Any, premise: Premise) -> dict[str, Any]:
        users = session.execute(select(PremiseUser.user_id).where(PremiseUser.premise == premise.name)).scalars()
        hosts = session.execute(select(PremiseHost.host_id).where(PremiseHost.premise == premise.name)).scalars()
        return {"name": premise.name, "revision": premise.revision, "policy_revision": premise.policy_digest,
                "policy": premise.policy, "users": sorted(users), "hosts": sorted(hosts)}

    def get_premise(self, name: str, revision: int | None = None) -> dict[str, Any]:
        with self.transaction() as session:
            premise = found(session.get(Premise, name), "premise", name)
            view = self._premise_view(session, premise)
            if revision is not None:
                old = found(session.get(PolicyRevision, (name, revision)), "policy revision", f"{name}@{revision}")
                view.update(revision=old.revision, policy=old.policy, policy_revision=old.policy_digest)
            return view
