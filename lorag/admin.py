"""`lorag adapters list | load | swap | rollback | retire`: the admin API of a running gateway, from a shell.

    lorag adapters list
    lorag adapters load support-agent /adapters/support-agent-v2     # validate and load, not active yet
    lorag adapters swap support-agent --path /adapters/support-agent-v2
    lorag adapters swap support-agent --version 3f2a1b9c
    lorag adapters rollback support-agent
    lorag adapters retire support-agent

The gateway is --url (LORAG_GATEWAY_URL, default http://127.0.0.1:8000), the key --admin-key (LORAG_ADMIN_KEY).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx
from pydantic import Field, SecretStr

from retrieval.settings import LoragSettings


class AdminClientSettings(LoragSettings):
    """Where the gateway is and the key of its admin API (LORAG_GATEWAY_URL, LORAG_ADMIN_KEY, or `.env`)."""

    gateway_url: str = Field(default="http://127.0.0.1:8000", description="The gateway's base URL.")
    admin_key: SecretStr | None = Field(default=None, description="Bearer token of the gateway's /admin API.")


def _request(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    settings = AdminClientSettings.from_options(gateway_url=args.url, admin_key=args.admin_key)
    key = settings.admin_key.get_secret_value() if settings.admin_key else ""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    url = settings.gateway_url.rstrip("/")
    try:
        response = httpx.request(method, url + path, json=body, headers=headers, timeout=args.timeout)
    except httpx.RequestError as exc:
        raise SystemExit(f"cannot reach the gateway at {url}: {exc}") from None
    try:
        data = response.json()
    except ValueError:
        data = {"error": {"message": response.text}}
    if response.status_code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise SystemExit(f"error {response.status_code}: {error.get('message') or data}")
    return data


def _print_table(adapters: list[dict[str, Any]]) -> None:
    rows = [("ADAPTER", "VERSION", "SERVED NAME", "STATE", "ENGINES", "LOAD S", "SERVED", "IN FLIGHT")]
    for adapter in adapters:
        for v in adapter["versions"]:
            load = v.get("load_seconds")
            rows.append(
                (
                    adapter["name"],
                    v["version"],
                    v["served_name"],
                    v["state"],
                    str(len(v["loaded_on"])),
                    f"{load:.2f}" if load is not None else "-",
                    str(v["requests_served"]),
                    str(v["in_flight"]),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _run(args: argparse.Namespace) -> int:
    name = getattr(args, "name", None)
    if args.adapters_command == "list":
        data = _request(args, "GET", "/admin/adapters")["data"]
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            _print_table(data)
        return 0
    if args.adapters_command == "load":
        result = _request(args, "POST", f"/admin/adapters/{name}/versions", {"path": args.path, "load": True})
    elif args.adapters_command == "swap":
        body = {"version": args.version} if args.version else {"path": args.path}
        result = _request(args, "POST", f"/admin/adapters/{name}/swap", body)
    elif args.adapters_command == "rollback":
        result = _request(args, "POST", f"/admin/adapters/{name}/rollback")
    else:
        result = _request(args, "POST", f"/admin/adapters/{name}/retire")
    print(json.dumps(result, indent=2))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `adapters ...` to the lorag command line."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the gateway (LORAG_GATEWAY_URL, default http://127.0.0.1:8000)")
    common.add_argument("--admin-key", help="admin key (default: LORAG_ADMIN_KEY)")
    common.add_argument("--timeout", type=float, default=300, help="seconds to wait (a swap drains nothing first)")
    group = sub.add_parser("adapters", help="list, load, swap, roll back and retire adapter versions").add_subparsers(
        dest="adapters_command", required=True
    )
    listing = group.add_parser("list", parents=[common], help="adapters, versions, state, requests served")
    listing.add_argument("--json", action="store_true")
    load = group.add_parser("load", parents=[common], help="validate and load a new version (not active yet)")
    load.add_argument("name")
    load.add_argument("path")
    swap = group.add_parser("swap", parents=[common], help="make a version active (loaded and warmed first)")
    swap.add_argument("name")
    which = swap.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="a registered version (short hash, or 'boot')")
    which.add_argument("--path", help="a new version's directory")
    for verb, text in (("rollback", "back to the previous version"), ("retire", "404 for new requests, then unload")):
        parser = group.add_parser(verb, parents=[common], help=text)
        parser.add_argument("name")
    for parser in group.choices.values():
        parser.set_defaults(func=_run)
