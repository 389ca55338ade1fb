"""Tenants and API keys. A key is `sqz_` + 32 random bytes (url-safe); only its sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets

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


def authenticate(session: Session, key: str) -> Tenant | None:
    row = session.execute(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).scalar_one_or_none()
    return row


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
