"""Tenants and API keys. A key is `sqz_` + 32 random bytes (url-safe); only its sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.db import new_id, utcnow
from app.store.tables.auth import ApiKey, Tenant

DEFAULT_TENANT = "default"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(id=new_id("ten"), name=name, webhook_secret=secrets.token_urlsafe(32))
        session.add(tenant)
        session.flush()
    return tenant


def create_key(session: Session, tenant_name: str, key: str | None = None) -> str:
    """Adds a key to the tenant (created if new) and returns it; the only time the key is visible."""
    tenant = get_or_create_tenant(session, tenant_name)
    key = key or f"sqz_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(id=new_id("key"), tenant_id=tenant.id, key_hash=hash_key(key), prefix=key[:10]))
    session.flush()
    return key


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: the tenant its key belongs to."""

    id: str
    name: str


KEY_CACHE_S = 10.0  # a revoked key stops working within this long in every API process
KEY_CACHE_SIZE = 10_000


class KeyCache:
    """Valid keys (by hash) seen in the last KEY_CACHE_S: a client polling a job costs no key lookup per
    request. Only successes are kept; a wrong key is looked up every time (and counted by the rate limit)."""

    def __init__(self) -> None:
        self.entries: OrderedDict[str, tuple[Caller, float]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, digest: str) -> Caller | None:
        with self.lock:
            found = self.entries.get(digest)
            if found is None or found[1] < time.monotonic():
                return None
            return found[0]

    def put(self, digest: str, caller: Caller) -> None:
        with self.lock:
            self.entries[digest] = (caller, time.monotonic() + KEY_CACHE_S)
            self.entries.move_to_end(digest)
            while len(self.entries) > KEY_CACHE_SIZE:
                self.entries.popitem(last=False)


_keys = KeyCache()


def cached_caller(key: str) -> Caller | None:
    """The key's tenant when it was valid in the last KEY_CACHE_S, without the database."""
    return _keys.get(hash_key(key))


def authenticate(session: Session, key: str) -> Caller | None:
    digest = hash_key(key)
    if (caller := _keys.get(digest)) is not None:
        return caller
    row = session.execute(
        select(Tenant.id, Tenant.name)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
    ).one_or_none()
    if row is None:
        return None
    caller = Caller(row.id, row.name)
    _keys.put(digest, caller)
    return caller


def revoke_keys(session: Session, tenant_name: str) -> int:
    keys = session.scalars(select(ApiKey).join(Tenant).where(Tenant.name == tenant_name, ApiKey.revoked_at.is_(None)))
    n = 0
    for k in keys:
        k.revoked_at = utcnow()
        n += 1
    return n


def ensure_bootstrap_key(session: Session, configured: str | None) -> str | None:
    """At first start the `default` tenant gets a key: the configured one, else a random one.
    Returns the key when it was created now (to print it), else None."""
    tenant = get_or_create_tenant(session, DEFAULT_TENANT)
    if configured:
        exists = session.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_key(configured)))
        return None if exists else create_key(session, DEFAULT_TENANT, configured)
    has_key = session.scalar(select(ApiKey.id).where(ApiKey.tenant_id == tenant.id).limit(1))
    return None if has_key else create_key(session, DEFAULT_TENANT)
