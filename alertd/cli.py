"""The `alertd` command: serve, demo, send, status, cells, users and tokens (`cli_people`), audience
imports, the audit log, check-config, fakes."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import pathlib
import signal
import sys
from collections.abc import Sequence

import aiohttp

from alertd import (
    app as app_mod,
    cli_base,
    cli_people,
    config,
    errors,
    estimate as estimate_mod,
    importing,
    logs,
    model,
    systemd,
)

EXIT_USAGE = 2
SWITCH_INTERVAL = 0.0005  # seconds (see `_serve`)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args) or 0
    except errors.ConfigError as exc:
        problems = exc.problems or [exc.message]
        print("configuration problems:", *(f"  - {p}" for p in problems), sep="\n", file=sys.stderr)
        return 1
    except errors.AlertdError as exc:
        field = getattr(exc, "field", None)
        print(f"error: {field + ': ' if field else ''}{exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `alertd audit | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alertd", description="Citizen-alert broadcasting daemon.")
    sub = p.add_subparsers(metavar="COMMAND")

    def cmd(name: str, func, help: str, config_arg: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(func=func)
        if config_arg:
            cli_base.config_arg(c)
        return c

    cmd("serve", serve, "Run the daemon.")
    c = cmd("check-config", check_config, "Report every problem in a configuration file.", False)
    c.add_argument("file")
    c = cmd("example-config", example_config, "Print the documented example configuration (it uses the fakes).",
            False)
    c.add_argument("--files", metavar="DIR", help="write it, an example order and a small audience into DIR")
    c = cmd("demo", demo, "Fakes, SQLite, 2,000 subscribers and one alert, end to end.", False)
    c.add_argument("--once", action="store_true", help="exit with a summary when the alert settles")
    c.add_argument("--subscribers", type=int, default=2000)
    c.add_argument("--port", type=int, default=0, help="the daemon's port (default: any free port)")
    c = cmd("fakes", fakes, "Serve the fake Twilio, FCM and siren-gateway providers.", False)
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8900)

    c = cmd("send", send, "Post an alert order (JSON, or CAP 1.2 XML) to a running daemon.")
    c.add_argument("file")
    c.add_argument("--expires-in", type=cli_base.duration, metavar="DURATION",
                   help="a JSON order expires this long from now (2h, 90m, 1h30m, 1d), whatever it says")
    _client_args(c)
    c = cmd("preview", preview, "Render an order without sending it: its texts, and how long and how much per channel.")
    c.add_argument("file")
    c.add_argument("--expires-in", type=cli_base.duration, metavar="DURATION",
                   help="a JSON order expires this long from now (2h, 90m, 1h30m, 1d), whatever it says")
    c.add_argument("--json", action="store_true", help="print the daemon's answer as it is")
    _client_args(c)
    c = cmd("status", status, "Show an alert's progress.")
    c.add_argument("id")
    _client_args(c)
    c = cmd("approve", approve, "Approve an alert awaiting a second person (or issue a draft).")
    c.add_argument("id")
    c.add_argument("--status", choices=("actual", "exercise", "test", "system"),
                   help="a draft's status as issued (default actual)")
    _client_args(c)
    c = cmd("reject", reject, "Reject an alert awaiting approval: it is never sent.")
    c.add_argument("id")
    c.add_argument("--reason", required=True, help="why, for the audit and the person who sent it")
    _client_args(c)
    c = cmd("cancel", cancel, "Cancel an alert: nothing more is sent, sirens get a cancel command.")
    c.add_argument("id")
    _client_args(c)

    cli_people.register(sub)

    c = cmd("audit", audit_log, "Show the audit log (newest first), or check that its chain holds.", False)
    c.add_argument("--config", "-c", default=os.environ.get("ALERTD_CONFIG"))
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--cell")
    c.add_argument("--action")
    c.add_argument("--subject", help="an alert or token id")
    c.add_argument("--verify", action="store_true", help="check every entry's hash chain instead")

    for noun, reader in (("subscribers", importing.read_subscribers), ("sirens", importing.read_sirens)):
        group = sub.add_parser(noun, help=f"Manage {noun}.").add_subparsers(metavar="ACTION")
        c = group.add_parser("import", help=f"Import {noun} from a CSV file; bad rows are reported.")
        c.set_defaults(func=lambda a, noun=noun, reader=reader: import_csv(a, noun, reader))
        c.add_argument("--config", "-c", default=os.environ.get("ALERTD_CONFIG"))
        c.add_argument("file")
    return p


def _client_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--url", default=os.environ.get("ALERTD_URL"), help="daemon URL (default: public_url)")
    c.add_argument("--token", default=os.environ.get("ALERTD_TOKEN"), help="bearer token (or ALERTD_TOKEN)")


# -- daemon --------------------------------------------------------------------------------------


def serve(args) -> int:
    # Logged, not printed: under systemd every line the daemon writes is JSON.
    log = logs.get_logger("alertd.cli")
    try:
        cfg = cli_base.load(args)
    except errors.ConfigError as exc:
        logs.configure()  # the configuration's own log settings may be what is wrong
        log.error("alertd cannot serve", error="configuration problems", problems=exc.problems or [exc.message])
        return 1
    try:
        asyncio.run(_serve(cfg))
    except (errors.AlertdError, OSError) as exc:  # a channel that cannot start, a port taken …
        log.error("alertd cannot serve", error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


async def _serve(cfg: config.Config) -> None:
    log = logs.get_logger("alertd.cli")
    host, _, port = cfg.server.listen.rpartition(":")
    runner = app_mod.runner(app_mod.build(cfg))
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    logs.watch(loop)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await app_mod.Site(runner, host.strip("[]") or None, int(port)).start()
        # Only now that the port listens may anything be sent: the receipts of what is sent come to it.
        await app_mod.listening(runner.app)
        # Everything loaded so far (the provider libraries are large) lives as long as the process:
        # keep it out of the cyclic collector's way, whose full passes would scan it over and over.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)  # fewer young collections under a fan-out's allocation rate
        # The loop shares the GIL with the store's threads (SQLite), and each statement hands it
        # over twice: at the default 5 ms a hand-over, a new alert's few statements waited behind a
        # fan-out's for tens of ms (`bench/priority.py`: 202 p50 27 -> 17 ms, first siren p50 66 -> 45).
        sys.setswitchinterval(SWITCH_INTERVAL)
        systemd.ready()  # only now: listening, and sending
        log.info("alertd serving", listen=cfg.server.listen, public_url=cfg.server.public_url,
                 channels=sorted(cfg.channels))
        await stop.wait()  # SIGTERM or SIGINT: stop taking work, finish what is on the wire
        log.info("alertd stopping: finishing the calls on the wire")
    finally:
        systemd.stopping()
        await runner.cleanup()
    log.info("alertd stopped")


def check_config(args) -> int:
    problems = config.check(args.file)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{args.file}: ok")
    return 1 if problems else 0


def example_config(args) -> int:
    if not args.files:
        sys.stdout.write(config.EXAMPLE.read_text(encoding="utf-8"))
        return 0
    folder = pathlib.Path(args.files)
    folder.mkdir(parents=True, exist_ok=True)
    for example in sorted(config.EXAMPLE.parent.iterdir()):
        target = folder / example.name
        if target.exists():  # never overwrite what an operator may have edited
            print(f"{target}: exists, kept", file=sys.stderr)
            continue
        target.write_bytes(example.read_bytes())
        print(target)
    return 0


def fakes(args) -> int:
    from alertd import fakes as fakes_mod

    fakes_mod.serve(args.host, args.port)
    return 0


def demo(args) -> int:
    from alertd import demo as demo_mod

    return asyncio.run(demo_mod.run(args.once, args.subscribers, args.port))


# -- store administration --------------------------------------------------------------------------


def import_csv(args, noun: str, reader) -> int:
    cfg = cli_base.load(args)
    try:
        result = reader(args.file)
    except OSError as exc:
        raise errors.AlertdError(f"{args.file}: cannot read: {exc.strerror}") from None
    for problem in result.problems:
        print(f"{args.file}:{problem.line}: {problem.field}: {problem.reason}", file=sys.stderr)
    upsert = "upsert_recipients" if noun == "subscribers" else "upsert_sirens"

    async def store(db) -> int:
        count = await getattr(db, upsert)(list(result.items))
        entry = cli_base.local_entry(f"{noun}_imported", None, count=count, file=os.path.basename(args.file))
        await db.add_audit(entry)
        return count

    count = asyncio.run(cli_base.with_store(cfg, store))
    print(f"imported {count} {noun}; {len(result.problems)} problems reported")
    return 1 if result.problems else 0


async def _verify(db) -> tuple[bool, int | None]:
    return not await db.audit(1), await db.verify_audit()


def audit_log(args) -> int:
    cfg = cli_base.load(args)
    if args.verify:
        empty, broken = asyncio.run(cli_base.with_store(cfg, _verify))
        if empty:
            print("the audit log is empty: nothing to verify (a log emptied by hand would look the same)",
                  file=sys.stderr)
            return 1
        if broken is not None:
            print(f"the audit chain breaks at entry {broken}: it was changed or an entry before it removed",
                  file=sys.stderr)
            return 1
        print("the audit chain holds")
        return 0
    entries = asyncio.run(cli_base.with_store(
        cfg, lambda db: db.audit(args.limit, None, args.cell, args.action, args.subject)
    ))
    if not entries:
        print("no audit entry matches" if args.cell or args.action or args.subject else "the audit log is empty",
              file=sys.stderr)
    for e in entries:
        detail = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in e.detail.items())
        print(f"{e.id:>6}  {e.at:%Y-%m-%d %H:%M:%S}Z  {e.cell:<24} {e.token_id or '-':<16} {e.action:<20} "
              f"{e.subject or '-':<32} {e.address or '-':<15} {detail}")
    return 0


# -- API client ----------------------------------------------------------------------------------


def _target(args) -> tuple[str, dict[str, str]]:
    url = args.url
    if not url:
        url = config.load(args.config).server.public_url
    if not args.token:
        raise errors.Unauthenticated("give --token or set ALERTD_TOKEN")
    return url.rstrip("/"), {"Authorization": f"Bearer {args.token}"}


async def _request(method: str, url: str, headers: dict[str, str], **kw) -> tuple[int, dict]:
    try:
        async with aiohttp.ClientSession(headers=headers) as session, session.request(method, url, **kw) as resp:
            return resp.status, await resp.json(content_type=None)
    except (aiohttp.ClientError, OSError) as exc:  # a ClientConnectorError is both
        raise errors.AlertdError(f"cannot reach {url.split('/v1/')[0]}: {exc}") from None
    except ValueError:  # not the daemon: something else answers there
        raise errors.AlertdError(f"{url} did not answer JSON: is alertd listening there?") from None


def with_expiry(body: bytes, expires_in: dt.timedelta, now: dt.datetime) -> bytes:
    """A JSON order's body with `expires` set `expires_in` after `now` (CAP documents keep their own)."""
    if body.lstrip().startswith(b"<"):
        raise errors.AlertdError("--expires-in applies to JSON orders: a CAP document gives its own <expires>")
    try:
        order = json.loads(body)
    except ValueError as exc:
        raise errors.AlertdError(f"the order is not JSON: {exc}") from None
    if not isinstance(order, dict):
        raise errors.AlertdError("the order is not a JSON object")
    order["expires"] = (now + expires_in).isoformat(timespec="seconds")
    return json.dumps(order, ensure_ascii=False).encode()


def _post_order(args, path: str) -> tuple[int, dict]:
    """POST the order in `args.file` (JSON, or CAP 1.2 XML) to `path`."""
    base, headers = _target(args)
    body = cli_base.read(args.file)
    if args.expires_in:
        body = with_expiry(body, args.expires_in, model.utcnow())
    # A CAP 1.2 document is XML: its first non-blank byte is `<` (a JSON order's is `{`).
    headers["Content-Type"] = "application/cap+xml" if body.lstrip().startswith(b"<") else "application/json"
    return asyncio.run(_request("POST", base + path, headers, data=body))


def send(args) -> int:
    code, answer = _post_order(args, "/v1/alerts")
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    return 0 if code < 300 else 1


def preview(args) -> int:
    code, answer = _post_order(args, "/v1/preview")
    if code >= 300 or args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False), file=sys.stdout if code < 300 else sys.stderr)
        return 0 if code < 300 else 1
    print(format_preview(answer))
    return 0


def _post(args, action: str, body: dict | None = None) -> int:
    """POST /v1/alerts/{id}/{action}; print the answer (a problem on stderr)."""
    base, headers = _target(args)
    kw = {"json": body} if body else {}
    code, answer = asyncio.run(_request("POST", f"{base}/v1/alerts/{args.id}/{action}", headers, **kw))
    print(json.dumps(answer, indent=2, ensure_ascii=False), file=sys.stdout if code < 300 else sys.stderr)
    return 0 if code < 300 else 1


def approve(args) -> int:
    return _post(args, "approve", {"status": args.status} if args.status else None)


def reject(args) -> int:
    return _post(args, "reject", {"reason": args.reason})


def cancel(args) -> int:
    return _post(args, "cancel")


def status(args) -> int:
    base, headers = _target(args)
    code, answer = asyncio.run(_request("GET", f"{base}/v1/alerts/{args.id}", headers))
    if code >= 300:
        print(json.dumps(answer, indent=2, ensure_ascii=False), file=sys.stderr)
        return 1
    print(format_status(answer))
    return 0


def format_status(alert: dict) -> str:
    lines = [
        f"alert {alert['id']}  {alert['event']}  [{alert['status']}, {alert['state']}]",
        f"zones {', '.join(alert['area']['zones'])}  expires {alert.get('expires') or '-'}",
    ]
    states = [s.value for s in model.State]
    lines.append(f"{'channel':<10}" + "".join(f"{s:>11}" for s in states))
    for channel, counts in sorted(alert.get("counts", {}).items()):
        lines.append(f"{channel:<10}" + "".join(f"{counts.get(s, 0):>11}" for s in states))
    return "\n".join(lines)


def format_preview(answer: dict) -> str:
    """The estimate of a preview as a table, then its warnings."""
    estimate = answer["estimate"]
    lines = [f"{len(answer['messages'])} messages rendered (--json shows them)",
             f"{'channel':<8}{'recipients':>12}{'messages':>12}{'segments':>10}{'per second':>18}{'to the last':>14}"
             f"{'cost':>16}"]
    for kind, c in estimate["channels"].items():
        rate = "unknown" if c["rate"] is None else f"{c['rate']:g}" + (" (default)" if c["rate_is_default"] else "")
        last = "unknown" if c["seconds_to_last"] is None else estimate_mod.duration(c["seconds_to_last"])
        cost = f"{c['cost']['amount']:.2f} {c['cost']['currency']}" if c["cost"] else "-"
        segments = "-" if c["segments"] is None else c["segments"]
        lines.append(f"{kind:<8}{c['recipients']:>12}{c['messages']:>12}{segments:>10}{rate:>18}{last:>14}{cost:>16}")
    lines += [f"warning {w['code']} ({w['channel']}): {w['detail']}" for w in estimate["warnings"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
