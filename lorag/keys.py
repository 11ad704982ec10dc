"""`lorag keys create|list|revoke`: the chat API's keys in the keys file (LORAG_API_KEYS_FILE or --file).

`create` prints the new key once: only its hash is stored, so a lost key is revoked and replaced, never shown
again. A running gateway re-reads the file within a second, so a revocation needs no restart.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from server.keys import KeyLimits, KeysError, read_keys_file, write_keys_file
from server.keys import new_key as make_key
from server.settings import GatewaySettings

DEFAULT_FILE = Path(".lorag/keys.json")


def _path(args: argparse.Namespace) -> Path:
    if args.file is not None:
        return Path(args.file)
    return GatewaySettings().api_keys_file or DEFAULT_FILE


def _create(args: argparse.Namespace) -> int:
    path = _path(args)
    keys = read_keys_file(path)
    limits = KeyLimits(requests_per_minute=args.rpm, tokens_per_minute=args.tpm, concurrent_streams=args.streams)
    assistants = [a.strip() for a in args.assistants.split(",") if a.strip()]
    token, record = make_key(args.tenant, assistants, limits, name=args.name)
    keys.keys.append(record)
    write_keys_file(path, keys)
    print(f"key {record.id} for tenant {record.tenant!r} written to {path}; it is shown only now:", file=sys.stderr)
    print(token)
    return 0


def _list(args: argparse.Namespace) -> int:
    keys = read_keys_file(_path(args))
    print(f"{'id':<14} {'tenant':<16} {'state':<8} {'assistants':<36} {'rpm':>6} {'tpm':>8} {'streams':>7}  created")
    for k in keys.keys:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(k.created_at))
        limits = k.limits
        print(
            f"{k.id:<14} {k.tenant:<16} {'revoked' if k.revoked else 'active':<8} {','.join(k.assistants):<36} "
            f"{limits.requests_per_minute or '-':>6} {limits.tokens_per_minute or '-':>8} "
            f"{limits.concurrent_streams or '-':>7}  {created} {k.name}"
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    path = _path(args)
    keys = read_keys_file(path)
    found = [k for k in keys.keys if k.id == args.id]
    if not found:
        print(f"no key {args.id!r} in {path}", file=sys.stderr)
        return 1
    found[0].revoked = True
    write_keys_file(path, keys)
    print(f"key {args.id} revoked (a running gateway refuses it within a second)")
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.action(args))
    except (KeysError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lorag keys ...`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--file", help=f"the keys file (default: LORAG_API_KEYS_FILE, else {DEFAULT_FILE})")
    group = sub.add_parser("keys", help="create, list and revoke API keys of the chat API").add_subparsers(
        dest="keys_command", required=True
    )
    create = group.add_parser("create", parents=[common], help="a new key, printed once")
    create.add_argument("--tenant", required=True, help="the brand or customer the key belongs to")
    create.add_argument("--assistants", default="*", help="comma-separated assistants it may use (default: all)")
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens (prompt + completion) per minute")
    create.add_argument("--streams", type=int, help="concurrent streams")
    create.set_defaults(func=_run, action=_create)
    listing = group.add_parser("list", parents=[common], help="keys (ids, tenants, limits; never the keys)")
    listing.set_defaults(func=_run, action=_list)
    revoke = group.add_parser("revoke", parents=[common], help="refuse a key from now on")
    revoke.add_argument("id", help="the key's id (the part after `lorag_`)")
    revoke.set_defaults(func=_run, action=_revoke)
