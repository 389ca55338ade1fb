"""`squeeze-admin`: keys and tenants, from the machine that runs the service.

squeeze-admin create-key --tenant acme      prints the new key alone on stdout
squeeze-admin revoke-keys --tenant acme
squeeze-admin webhook-secret --tenant acme  the secret that signs acme's webhooks
squeeze-admin sweep                         requeue or fail jobs whose worker went silent"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import select

from app.store.db import session_scope
from app.store.tables.auth import Tenant

from .auth.service import create_key, revoke_keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="squeeze-admin", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("create-key", "revoke-keys", "webhook-secret"):
        p = sub.add_parser(name)
        p.add_argument("--tenant", required=True)
    sub.add_parser("sweep")
    args = parser.parse_args(argv)
    with session_scope() as session:
        if args.command == "create-key":
            print(create_key(session, args.tenant))
        elif args.command == "revoke-keys":
            print(f"revoked {revoke_keys(session, args.tenant)} key(s)", file=sys.stderr)
        elif args.command == "webhook-secret":
            tenant = session.scalar(select(Tenant).where(Tenant.name == args.tenant))
            if tenant is None:
                print(f"no tenant named {args.tenant!r}", file=sys.stderr)
                return 1
            print(tenant.webhook_secret)
        elif args.command == "sweep":
            from .sweeper import sweep_once

            for job_id, status in sweep_once():
                print(f"{job_id} {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
