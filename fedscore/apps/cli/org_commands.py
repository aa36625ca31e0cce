"""`fedscore org|custodian|authority|policy ...`: separate organisations, separate commands.

An organisation makes its own keys and request (`org`), each root custodian holds and
uses one root key (`custodian`), the federation authority admits, removes and rotates
from requests and publishes what a threshold of custodians signed (`authority`), the
policy authority signs policies with its own key (`policy sign`). See docs/operations.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedscore.apps.authority import (
    DEFAULT_OVERLAP_SECONDS,
    SECTORS,
    Authority,
    init_authority,
)
from fedscore.apps.authority_offer import offer_to_servers
from fedscore.apps.custodian import init_custodian, read_root_pub, sign_draft
from fedscore.apps.org import (
    init_org,
    install_bundle,
    install_certificate,
    renew_cert,
    rotate_key,
    sign_policy_document,
)
from fedscore.runtime.party_config import ROLE_NAMES
from keys.ids import key_id


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "json", False):
        print(text, flush=True)


def _json(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--json", action="store_true", help="print the result as one JSON object")


# --- org -----------------------------------------------------------------------------------


def org_init(args: argparse.Namespace) -> dict[str, Any]:
    paths = init_org(
        args.dir,
        args.id,
        args.role,
        display_name=args.name or "",
        endpoint=args.endpoint or "",
        listen=args.listen or "",
        fetch_registry_from=tuple(args.fetch_registry_from or ()),
    )
    _say(args, f"organisation {args.id} ({args.role}) created in {paths.root}")
    _say(args, f"  send {paths.request} to the federation authority; it holds no secret")
    return {"id": args.id, "role": args.role, "request": str(paths.request)}


def org_install(args: argparse.Namespace) -> dict[str, Any]:
    link = install_bundle(args.dir, args.bundle.read_bytes())
    roots = [key_id(bytes(k.public_key)) for k in link.registry.root.keys]
    _say(args, f"installed registry version {link.version} of {link.federation_id}")
    _say(
        args,
        f"  root: {link.registry.root.threshold} of {len(roots)} keys {', '.join(roots)}; "
        "compare these key ids with the ones the custodians published",
    )
    return {"registry_version": link.version, "root_key_ids": roots}


def org_rotate_key(args: argparse.Namespace) -> dict[str, Any]:
    request = rotate_key(args.dir)
    _say(args, f"new signing key pending; send {request} to the federation authority")
    return {"request": str(request)}


def org_renew_cert(args: argparse.Namespace) -> dict[str, Any]:
    request = renew_cert(args.dir)
    _say(args, f"new TLS key pending; send {request} to the federation authority")
    return {"request": str(request)}


def org_install_cert(args: argparse.Namespace) -> dict[str, Any]:
    install_certificate(args.dir, args.cert.read_bytes())
    _say(args, "certificate installed; restart the party to serve it")
    return {"installed": True}


# --- custodian -------------------------------------------------------------------------------


def custodian_init(args: argparse.Namespace) -> dict[str, Any]:
    root = init_custodian(args.dir, args.name)
    kid = key_id(bytes(root.public_key))
    _say(args, f"root key of custodian {args.name}: key id {kid}")
    _say(args, "  publish this key id so organisations can check the registry's root")
    return {"custodian": args.name, "key_id": kid}


def custodian_sign(args: argparse.Namespace) -> dict[str, Any]:
    signed = sign_draft(args.dir, args.draft)
    _say(
        args,
        f"{signed.custodian} signed version {signed.version} of {signed.federation_id} "
        f"({signed.participants} participant entries; {signed.signatures} signatures now)",
    )
    for change in signed.changes:
        _say(args, f"  {change}")
    return {**signed.__dict__, "changes": list(signed.changes)}


# --- authority -------------------------------------------------------------------------------


def authority_init(args: argparse.Namespace) -> dict[str, Any]:
    roots = [read_root_pub(path) for path in args.root_key]
    init_authority(args.dir, args.federation_id, roots, args.threshold)
    _say(
        args, f"federation authority of {args.federation_id}: root {args.threshold} of {len(roots)}"
    )
    return {"federation_id": args.federation_id, "root_threshold": f"{args.threshold}/{len(roots)}"}


def _drafted(args: argparse.Namespace, authority: Authority, what: str) -> dict[str, Any]:
    _say(args, f"{what}; draft {authority.paths.draft} awaits the custodians' signatures")
    return {"draft": str(authority.paths.draft)}


def authority_admit(args: argparse.Namespace) -> dict[str, Any]:
    authority = Authority(args.dir)
    participant = authority.admit(args.request, args.sector)
    return _drafted(args, authority, f"admitted {participant.id} ({args.sector})")


def authority_remove(args: argparse.Namespace) -> dict[str, Any]:
    authority = Authority(args.dir)
    authority.remove(args.id)
    return _drafted(args, authority, f"removed {args.id}")


def authority_rotate(args: argparse.Namespace) -> dict[str, Any]:
    authority = Authority(args.dir)
    new = authority.rotate(args.request, args.overlap_seconds)
    return _drafted(
        args, authority, f"new key for {new.id}; the old one verifies {args.overlap_seconds} s more"
    )


def authority_set_root(args: argparse.Namespace) -> dict[str, Any]:
    authority = Authority(args.dir)
    roots = [read_root_pub(path) for path in args.root_key]
    authority.set_root(roots, args.threshold)
    return _drafted(
        args,
        authority,
        f"new root {args.threshold} of {len(roots)}: a threshold of the old root and of the new "
        "must sign",
    )


def authority_set_endpoint(args: argparse.Namespace) -> dict[str, Any]:
    authority = Authority(args.dir)
    authority.set_endpoint(args.id, args.endpoint)
    return _drafted(args, authority, f"{args.id} moves to {args.endpoint}")


def authority_renew_registry(args: argparse.Namespace) -> dict[str, Any]:
    authority = Authority(args.dir)
    authority.renew_registry()
    return _drafted(args, authority, "the next version, unchanged but for its validity")


def authority_renew(args: argparse.Namespace) -> dict[str, Any]:
    authority = Authority(args.dir)
    cert = authority.renew(args.request)
    args.out.write_bytes(cert)
    _say(args, f"certificate written to {args.out}; the organisation installs it")
    return {"certificate": str(args.out)}


async def authority_publish(args: argparse.Namespace) -> dict[str, Any]:
    authority = Authority(args.dir)
    link = authority.publish(args.policy.read_bytes() if args.policy else None)
    _say(args, f"published registry version {link.version}")
    offered: dict[str, str] = {}
    if not args.no_offer:
        offered = await offer_to_servers(authority)
        for party_id, outcome in sorted(offered.items()):
            _say(args, f"  {party_id:18} {outcome}")
    return {"registry_version": link.version, "offered": offered}


def authority_bundle(args: argparse.Namespace) -> dict[str, Any]:
    args.out.write_bytes(Authority(args.dir).bundle(args.id))
    _say(args, f"admission bundle for {args.id} written to {args.out} (nothing secret in it)")
    return {"bundle": str(args.out)}


def policy_sign(args: argparse.Namespace) -> dict[str, Any]:
    args.out.write_bytes(sign_policy_document(args.dir, args.policy))
    _say(args, f"signed policy written to {args.out}")
    return {"signed": str(args.out)}


def register(parties: Any) -> None:
    org = parties.add_parser("org", help="one organisation's own keys, request and certificate")
    org_sub = org.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = org_sub.add_parser("init", help="make this organisation's keys, config and request")
    init.add_argument("dir", type=Path, help="new folder for the organisation")
    init.add_argument("--id", required=True, help="participant id, e.g. trc")
    init.add_argument("--role", required=True, choices=sorted(ROLE_NAMES))
    init.add_argument("--name", help="display name")
    init.add_argument("--endpoint", metavar="HOST:PORT", help="where others reach its server")
    init.add_argument("--listen", metavar="HOST:PORT", help="where it binds (default: endpoint)")
    init.add_argument(
        "--fetch-registry-from",
        action="append",
        metavar="HOST:PORT",
        help="a server to follow the registry from",
    )
    _json(init)
    init.set_defaults(run=org_init)
    for name, run, helptext in (
        ("install", org_install, "install the authority's admission bundle"),
        ("rotate-key", org_rotate_key, "make a new signing key and a rotation request"),
        ("renew-cert", org_renew_cert, "make a new TLS key and a renewal request"),
        ("install-cert", org_install_cert, "install a renewed certificate"),
    ):
        sub = org_sub.add_parser(name, help=helptext)
        sub.add_argument("dir", type=Path, help="the organisation's folder")
        if name == "install":
            sub.add_argument("bundle", type=Path, help="the bundle file from the authority")
        if name == "install-cert":
            sub.add_argument("cert", type=Path, help="the certificate file from the authority")
        _json(sub)
        sub.set_defaults(run=run)

    custodian = parties.add_parser("custodian", help="a root custodian's key")
    cust_sub = custodian.add_subparsers(dest="action", required=True, metavar="ACTION")
    c_init = cust_sub.add_parser("init", help="make a root key in a folder of one's own")
    c_init.add_argument("dir", type=Path)
    c_init.add_argument("--name", required=True, help="the custodian's name")
    _json(c_init)
    c_init.set_defaults(run=custodian_init)
    c_sign = cust_sub.add_parser("sign", help="sign a draft registry version")
    c_sign.add_argument("dir", type=Path, help="the custodian's folder")
    c_sign.add_argument("draft", type=Path, help="the draft, e.g. AUTH/draft.registry")
    _json(c_sign)
    c_sign.set_defaults(run=custodian_sign)

    authority = parties.add_parser("authority", help="the federation authority")
    auth_sub = authority.add_subparsers(dest="action", required=True, metavar="ACTION")
    a_init = auth_sub.add_parser("init", help="the CA and the root policy")
    a_init.add_argument("dir", type=Path)
    a_init.add_argument("--federation-id", required=True)
    a_init.add_argument(
        "--root-key", type=Path, action="append", required=True, help="a custodian's root.pub"
    )
    a_init.add_argument(
        "--threshold", type=int, required=True, help="root signatures a version needs"
    )
    _json(a_init)
    a_init.set_defaults(run=authority_init)
    admit = auth_sub.add_parser("admit", help="admit an organisation from its request")
    admit.add_argument("dir", type=Path)
    admit.add_argument("request", type=Path, help="its admission.request")
    admit.add_argument("--sector", default="unspecified", choices=sorted(SECTORS))
    _json(admit)
    admit.set_defaults(run=authority_admit)
    remove = auth_sub.add_parser("remove", help="remove a participant")
    remove.add_argument("dir", type=Path)
    remove.add_argument("--id", required=True)
    _json(remove)
    remove.set_defaults(run=authority_remove)
    rotate = auth_sub.add_parser("rotate", help="list a participant's new signing key")
    rotate.add_argument("dir", type=Path)
    rotate.add_argument("request", type=Path, help="its rotation.request")
    rotate.add_argument("--overlap-seconds", type=int, default=DEFAULT_OVERLAP_SECONDS)
    _json(rotate)
    rotate.set_defaults(run=authority_rotate)
    renew = auth_sub.add_parser("renew", help="issue a new TLS certificate from a renewal request")
    renew.add_argument("dir", type=Path)
    renew.add_argument("request", type=Path, help="its renewal.request")
    renew.add_argument("--out", type=Path, required=True, help="where to write the certificate")
    _json(renew)
    renew.set_defaults(run=authority_renew)
    set_root = auth_sub.add_parser("set-root", help="draft a new root (root rotation)")
    set_root.add_argument("dir", type=Path)
    set_root.add_argument("--root-key", type=Path, action="append", required=True)
    set_root.add_argument("--threshold", type=int, required=True)
    _json(set_root)
    set_root.set_defaults(run=authority_set_root)
    moved = auth_sub.add_parser("set-endpoint", help="draft a participant's new endpoint")
    moved.add_argument("dir", type=Path)
    moved.add_argument("--id", required=True)
    moved.add_argument("--endpoint", required=True, metavar="HOST:PORT")
    _json(moved)
    moved.set_defaults(run=authority_set_endpoint)
    renew_registry = auth_sub.add_parser(
        "renew-registry", help="draft the next version unchanged, before the newest expires"
    )
    renew_registry.add_argument("dir", type=Path)
    _json(renew_registry)
    renew_registry.set_defaults(run=authority_renew_registry)
    publish = auth_sub.add_parser(
        "publish", help="publish the signed draft and offer it to servers"
    )
    publish.add_argument("dir", type=Path)
    publish.add_argument("--policy", type=Path, help="a signed policy to distribute with it")
    publish.add_argument("--no-offer", action="store_true", help="do not offer it to the servers")
    _json(publish)
    publish.set_defaults(run=authority_publish)
    bundle = auth_sub.add_parser("bundle", help="an organisation's admission bundle")
    bundle.add_argument("dir", type=Path)
    bundle.add_argument("--id", required=True)
    bundle.add_argument("--out", type=Path, required=True)
    _json(bundle)
    bundle.set_defaults(run=authority_bundle)

    policy = parties.add_parser("policy", help="the policy authority signs a policy")
    pol_sub = policy.add_subparsers(dest="action", required=True, metavar="ACTION")
    p_sign = pol_sub.add_parser("sign", help="sign a policy document with the authority's key")
    p_sign.add_argument("dir", type=Path, help="the policy authority's organisation folder")
    p_sign.add_argument("policy", type=Path, help="policy document (JSON or TOML)")
    p_sign.add_argument("--out", type=Path, required=True)
    _json(p_sign)
    p_sign.set_defaults(run=policy_sign)
