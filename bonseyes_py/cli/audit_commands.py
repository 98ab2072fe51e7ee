"""``bonseyes audit``: verify the SM's hash-chained audit log, and list its entries.

``verify`` recomputes every entry's hash and link against the recorded head and exits 0 with
"audit chain intact: N entries", or 1 naming the first entry that was edited, deleted, inserted or
moved. It reads the database directly (no server needed, no write lock taken).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from bonseyes_py.cli import arguments
from bonseyes_py.cli.common import print_json
from bonseyes_py.cli.sm_commands import check_sm_directory


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("audit", help="the Security Manager's audit log",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)

    verify = commands.add_parser("verify", help="check the hash chain; exit 1 naming the first bad entry")
    verify.add_argument("directory", metavar="DIR", help="the Security Manager directory")
    verify.set_defaults(func=_verify)

    listing = commands.add_parser("list", help="list entries in sequence order")
    listing.add_argument("directory", metavar="DIR", help="the Security Manager directory")
    listing.add_argument("--after", type=arguments.non_negative_int, default=0,
                         help="only entries after this sequence number")
    listing.add_argument("--limit", type=arguments.bounded_int(1, 1000), default=100,
                         help="at most this many entries (max 1000)")
    listing.add_argument("--action", help="only this action (e.g. host-licence-issued, revoked)")
    listing.add_argument("--subject", help="only this subject")
    listing.add_argument("--json", action="store_true", help="print the entries as JSON")
    listing.set_defaults(func=_list)


def _open(directory: str):  # type: ignore[no-untyped-def]
    from bonseyes_py.sm import SecurityManager, SMConfig

    check_sm_directory(directory)
    return SecurityManager.open(SMConfig.load(directory))


def _verify(args: argparse.Namespace) -> int:
    sm = _open(args.directory)
    try:
        report = sm.verify_audit()
    finally:
        sm.close()
    if report.ok:
        print(f"audit chain intact: {report.entries} entries")
        return 0
    print(f"audit chain broken at entry {report.first_bad_seq}: {report.problem}")
    return 1


def _list(args: argparse.Namespace) -> int:
    sm = _open(args.directory)
    try:
        entries = sm.audit_log(after=args.after, limit=args.limit, action=args.action, subject=args.subject)
    finally:
        sm.close()
    if args.json:
        print_json(entries)
        return 0
    for entry in entries:
        at = dt.datetime.fromtimestamp(entry["at_ms"] / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        details = json.dumps(entry["details"], sort_keys=True, separators=(",", ":"))
        print(f"{entry['seq']:>6} {at} {entry['outcome']:<7} {entry['action']:<24} {entry['subject']} "
              f"by {entry['actor']} {details[:200]}")
    return 0
