"""A channel whose provider calls run in sending processes of its own, on other cores.

The provider client libraries are heavy in Python (the twilio client spends some 300 µs of CPU per
message, firebase-admin more): in the daemon's one process they, the dispatcher and the web API
share one core. With ``processes = N`` in a channel's section, the daemon starts N children
(``python -P -m alertd.channels.remote``) and hands them the rendered messages; each child builds the
same plugin from the same settings, makes the provider call and answers the receipt or the
classified error. Every decision stays in the daemon: what to claim, whether the alert was
cancelled (checked before the hand-over, as before the call in-process), retries, records, metrics.
A cancel also halts the alert in the children (`Remote.halt`): the messages handed over and not yet
begun are dropped before the cancel is answered.

The pipe protocol: frames of a 4-byte big-endian length and a `marshal`led document (both ends are
the same interpreter). The daemon writes the channel's specification first (the settings travel
here, never in argv or the environment), then lists of ``(seq, message)``; the child answers
``{"ready": True}`` once started, then lists of ``(seq, result)``. Each side gathers what it has to
say for a millisecond into one frame.
A child ignores SIGINT and SIGTERM: it stops when its stdin closes, after answering the calls on the
wire; when the daemon was killed, nobody reads those answers: the child drops them, says so in one
log line, and exits. It logs as the daemon does (JSON off a terminal) from its first line, whatever
goes wrong. A child that dies, or owes an answer for longer than three provider timeouts (it is then
killed), fails its calls on the wire as transient (the retry policy sends them again) and is started
again for the next message; one that cannot start again fails the calls as transient at once for
`RESTART_PAUSE` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import itertools
import marshal
import os
import signal
import struct
import sys
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from alertd import channels, errors, logs, model

log = structlog.get_logger("alertd.channels.remote")

FRAME = struct.Struct(">I")
# A millisecond is little beside a provider call (tens of ms) and gathers many answers in a frame.
FLUSH_DELAY = 0.001
RESTART_PAUSE = 5.0  # seconds between attempts to start again a child that cannot start
# In this order: a plugin's own subclass travels as the alertd class it derives from.
ERRORS: dict[str, type[errors.DeliveryError]] = {
    cls.__name__: cls
    for cls in (errors.Transient, errors.Permanent, errors.ChannelMisconfigured, errors.Halted, errors.DeliveryError)
}


def frame(document: Any) -> bytes:
    data = marshal.dumps(document)
    return FRAME.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    return marshal.loads(await reader.readexactly(size))


def dump_message(m: model.Message) -> tuple:
    # str(): plain strings whatever produced them (marshal refuses str subclasses such as Markup).
    return (m.delivery_id, str(m.alert_id), str(m.kind), str(m.to), str(m.body), str(m.title), str(m.locale),
            str(m.command), {str(k): str(v) for k, v in m.data.items()}, str(m.sender))


def load_message(v: tuple) -> model.Message:
    return model.Message(v[0], v[1], model.kind(v[2]), *v[3:])


def dump_result(result: model.Receipt | errors.DeliveryError) -> tuple:
    """As plain values, whatever types a plugin used (an HTTPStatus code, a Decimal delay …)."""
    if isinstance(result, model.Receipt):
        return ("Receipt", str(result.provider_id), str(result.status))
    name = next(name for name, cls in ERRORS.items() if isinstance(result, cls))
    code = result.code
    retry_after = result.retry_after if isinstance(result, errors.Transient) else None
    dead = isinstance(result, errors.Permanent) and bool(result.dead_address)
    return (name, str(result.message), None if code is None else str(code),
            None if retry_after is None else float(retry_after), dead)


def load_result(v: tuple) -> model.Receipt | errors.DeliveryError | None:
    if v[0] == "Acknowledged":  # the answer to a halt
        return None
    if v[0] == "Receipt":
        return model.Receipt(v[1], v[2])
    name, message, code, retry_after, dead_address = v
    if name == "Transient":
        return errors.Transient(message, code=code, retry_after=retry_after)
    if name == "Permanent":
        return errors.Permanent(message, code=code, dead_address=dead_address)
    return ERRORS[name](message, code=code)


class Batched:
    """Items written as one frame at most every `FLUSH_DELAY`, not one system call per message:
    under a fan-out the two processes would otherwise spend their time waking each other up."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._items: list[Any] = []

    def put(self, item: Any) -> None:
        if not self._items:
            asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
        self._items.append(item)

    def flush(self) -> None:
        if self._items:
            items, self._items = self._items, []
            self._write(frame(items))


class Remote:
    """The `channels.Channel` the dispatcher sees for a channel run in `processes` children.

    It builds the plugin in the daemon too, never started: that checks the settings at startup and
    answers what the daemon asks of the channel besides sending (`kind`, `address`, `concurrency`,
    the abilities it declares: `_declare`). It `channels.Halts` itself."""

    def __init__(
        self, plugin: str, settings: Mapping[str, Any], context: channels.Context, processes: int,
        log_level: str = "info", log_format: str = "auto",
    ) -> None:
        self.inner = channels.load(plugin)(settings, context)
        self.kind = self.inner.kind
        self.address = self.inner.address
        self.settings = self.inner.settings
        self.concurrency = self.inner.concurrency
        self._declare(self.inner)
        shared = dataclasses.replace(context, senders=processes)
        spec = {"plugin": plugin, "settings": dict(settings), "context": dataclasses.asdict(shared),
                "log_level": log_level, "log_format": log_format}
        patience = 3 * float(settings.get("timeout", 10))
        self.children = [Child(f"{context.name}-{i}", frame(spec), patience) for i in range(processes)]

    def _declare(self, inner: channels.Channel) -> None:
        """The plugin's declared abilities besides sending, as its own: settings, and receipts,
        which need only settings (never the client, not started in the daemon)."""
        if isinstance(inner, channels.Receipts):
            self.receipt_alias = inner.receipt_alias
            self.receipt = inner.receipt
        if isinstance(inner, channels.Acknowledges):
            self.ack_timeout = inner.ack_timeout
        if isinstance(inner, channels.Heartbeats):
            self.heartbeat_timeout, self.zones = inner.heartbeat_timeout, inner.zones
        if isinstance(inner, channels.Topics):
            self.sends_topics = inner.sends_topics
        if isinstance(inner, channels.DeadAddresses):
            self.reports_dead_addresses = inner.reports_dead_addresses
        if isinstance(inner, channels.Senders):
            self.senders = inner.senders

    def __repr__(self) -> str:
        return f"Remote({self.inner!r}, processes={len(self.children)})"

    async def start(self) -> None:
        await asyncio.gather(*(child.start() for child in self.children))

    async def send(self, message: model.Message) -> model.Receipt:
        child = min(self.children, key=lambda c: (not c.alive, len(c.waiting)))  # the least busy live one
        result = await child.send(message)
        if isinstance(result, errors.DeliveryError):
            raise result
        return result

    async def halt(self, alert_id: str) -> None:
        """Returns once no child can still begin a call of the alert (`Dispatcher.halt`)."""
        await asyncio.gather(*(child.halt(alert_id) for child in self.children))

    async def close(self) -> None:
        await asyncio.gather(*(child.close() for child in self.children))


class Child:
    """One sending process and the calls it owes answers for."""

    def __init__(self, name: str, setup: bytes, patience: float) -> None:
        self.name = name
        self.setup = setup  # the specification's frame
        self.patience = patience  # seconds a call may wait for its answer before the child is hung
        self.proc: asyncio.subprocess.Process | None = None
        self.waiting: dict[int, tuple[asyncio.Future, float]] = {}  # seq: (answer, handed over at)
        self._seq = itertools.count()
        self._starting = asyncio.Lock()
        self._failed: tuple[float, str] | None = None  # (when, why) the last start failed
        self.halted: set[str] = set()  # for a child started after the halt

    @property
    def alive(self) -> bool:
        return self.proc is not None

    async def start(self) -> None:
        """Start the child; errors.ChannelMisconfigured if it cannot start its channel."""
        async with self._starting:
            if self.proc is None:
                await self._spawn()

    async def _restart(self) -> errors.DeliveryError | None:
        """Start the child again after it died; the failure if it cannot, given at once to every
        call for `RESTART_PAUSE` seconds instead of each trying (and waiting) in turn. Transient:
        the messages wait a little and go, as for any provider hiccup."""
        loop = asyncio.get_running_loop()
        async with self._starting:
            if self.proc is None and not (self._failed and loop.time() - self._failed[0] < RESTART_PAUSE):
                try:
                    await self._spawn()
                except (errors.ChannelMisconfigured, OSError) as exc:
                    self._failed = (loop.time(), str(exc))
            if self.proc is None:
                why = self._failed[1] if self._failed else "the sending process is not running"
                return errors.Transient(why, code="sender_start", retry_after=RESTART_PAUSE)
            return None

    async def _spawn(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            # -P: nothing importable from the working directory (the service's writable state).
            sys.executable, "-P", "-m", "alertd.channels.remote",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            # Without the ALERTD_* overrides (config.ENV_PREFIX), secrets among them: the pipe brings the settings.
            env={k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")},
        )
        assert proc.stdin is not None and proc.stdout is not None  # both PIPE
        try:
            proc.stdin.write(self.setup)
            answer = await asyncio.wait_for(read_frame(proc.stdout), self.patience)
        except TimeoutError:
            answer = {"error": f"the sending process did not start within {self.patience:.0f} s"}
        except (asyncio.IncompleteReadError, ConnectionError):
            answer = {"error": "the sending process exited while starting (see its log lines)"}
        except (ValueError, EOFError, TypeError):
            answer = {"error": "the sending process answered nonsense while starting"}
        except BaseException:  # the start itself cancelled (a lane stopping): no half-started child
            await asyncio.shield(_end(proc))
            raise
        if not isinstance(answer, dict) or "error" in answer:
            await _end(proc)
            why = answer["error"] if isinstance(answer, dict) else f"unexpected answer {answer!r}"
            raise errors.ChannelMisconfigured(f"channel {self.name}: {why}")
        self.proc, self.out = proc, Batched(proc.stdin.write)
        self._reader = asyncio.create_task(self._read(proc), name=f"sender-{self.name}")
        log.info("sending process started", channel=self.name, pid=proc.pid)

    async def send(self, message: model.Message) -> model.Receipt | errors.DeliveryError:
        if self.proc is None and (failure := await self._restart()):
            return failure
        if message.alert_id in self.halted:  # halted while this call waited for a start
            return errors.Halted()
        return await self._ask(dump_message(message))

    async def halt(self, alert_id: str) -> None:
        """Returns once the child has dropped the alert's messages it had not begun to send."""
        self.halted.add(alert_id)
        async with self._starting:  # a child being started gets it too
            if self.proc is None:
                return
        await self._ask(alert_id)

    async def _ask(self, payload: Any) -> Any:
        loop = asyncio.get_running_loop()
        seq = next(self._seq)
        future = loop.create_future()
        self.waiting[seq] = (future, loop.time())
        self.out.put((seq, payload))
        return await future

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        try:
            while True:
                for seq, result in await self._answers(proc):
                    future, _ = self.waiting.pop(seq, (None, 0))
                    if future is not None and not future.done():
                        future.set_result(load_result(result))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:  # a garbled frame: nothing it owes can be trusted to come
            log.exception("sending process answered nonsense: killed", channel=self.name, pid=proc.pid)
            _kill(proc)
        # The child is gone: what it had on the wire may or may not have been sent.
        lost, self.waiting, self.proc = self.waiting, {}, None
        for future, _ in lost.values():
            if not future.done():
                future.set_result(errors.Transient("the sending process died", code="sender_died"))
        code = await proc.wait()
        if lost:
            log.error("sending process died", channel=self.name, pid=proc.pid, returncode=code, calls=len(lost))

    async def _answers(self, proc: asyncio.subprocess.Process) -> list:
        """The next frame of answers. A child that owes an answer for longer than `patience` (three
        provider timeouts) is hung: it is killed, and the end of its pipe follows."""
        assert proc.stdout is not None  # PIPE
        head = None
        while head is None:
            self._kill_if_hung(proc)
            with contextlib.suppress(TimeoutError):  # only the length waits: a frame is never read in part
                head = await asyncio.wait_for(proc.stdout.readexactly(FRAME.size), self.patience / 4)
        (size,) = FRAME.unpack(head)
        return marshal.loads(await proc.stdout.readexactly(size))

    def _kill_if_hung(self, proc: asyncio.subprocess.Process) -> None:
        oldest = next(iter(self.waiting.values()), None)  # seqs grow: the first is the oldest
        if oldest is not None and asyncio.get_running_loop().time() - oldest[1] > self.patience:
            log.error("sending process hung: killed", channel=self.name, pid=proc.pid, calls=len(self.waiting))
            _kill(proc)

    async def close(self) -> None:
        """Close the child's stdin: it answers the calls on the wire, then exits."""
        proc = self.proc
        if proc is None:
            return
        self.out.flush()
        if proc.stdin is not None:
            proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), self.patience)
        await _end(proc)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        _kill(proc)
    await proc.wait()


# -- the child --------------------------------------------------------------------------------------


class Answers:
    """The child's end of the answers pipe. Once the daemon has closed it (killed: a daemon that
    stops closes our stdin and reads on), what is left to say is dropped, not written to no one."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.dropped = 0  # frames

    @property
    def gone(self) -> bool:
        return self.writer.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.gone:
            self.dropped += 1
        else:
            self.writer.write(data)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):  # the daemon went meanwhile
            await self.writer.drain()

    def farewell(self) -> None:
        """The one line a child whose daemon is gone writes about it."""
        if self.gone:
            log.warning("the daemon is gone: its answers dropped", frames=self.dropped, pid=os.getpid())


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    answers = Answers(writer)
    try:
        await _serve(reader, answers)
    finally:
        answers.farewell()


async def _serve(reader: asyncio.StreamReader, answers: Answers) -> None:
    try:
        spec = await read_frame(reader)
    except asyncio.IncompleteReadError:
        return  # the daemon went before saying what to send
    logs.configure(spec.get("log_level", "info"), spec.get("log_format", "auto"))
    try:
        cls = channels.load(spec["plugin"])
        channel = cls(spec["settings"], channels.Context(**spec["context"]))
        await channel.start()
    except Exception as exc:  # reported to the daemon, which refuses to start
        answers.write(frame({"error": f"{type(exc).__name__}: {exc}"}))
        await answers.drain()
        return
    answers.write(frame({"ready": True}))
    # As the daemon does (cli.serve): what is loaded now lives as long as the process.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    out = Batched(answers.write)
    calls: set[asyncio.Task] = set()
    halted: set[str] = set()  # alerts cancelled: their messages not yet begun are dropped

    async def call(seq: int, message: model.Message) -> None:
        result: model.Receipt | errors.DeliveryError
        if message.alert_id in halted:  # the daemon records it cancelled
            result = errors.Halted()
        else:
            result = await _outcome(channel, message)
        out.put((seq, _plain(result)))

    try:
        while True:
            try:
                batch = await read_frame(reader)
            except asyncio.IncompleteReadError:
                break  # the daemon is stopping (or gone): finish the calls on the wire
            # The calls begin at the next turn of the loop, after every halt of this frame (and of
            # frames already in the pipe: reading them does not yield).
            for seq, payload in batch:
                if isinstance(payload, str):
                    halted.add(payload)
                    out.put((seq, ("Acknowledged",)))
                    continue
                task = asyncio.create_task(call(seq, load_message(payload)))
                calls.add(task)
                task.add_done_callback(calls.discard)
        await asyncio.gather(*calls, return_exceptions=True)
        out.flush()
        await answers.drain()
    finally:
        await channel.close()


async def _outcome(channel: channels.Channel, message: model.Message) -> model.Receipt | errors.DeliveryError:
    """Whatever the plugin does, an answer: an unanswered call would hold a sender of the daemon."""
    try:
        return channels.as_result(await channel.send(message))
    except Exception as exc:
        return channels.as_result(exc)
    except BaseException as exc:  # a library's stray CancelledError: answered all the same
        return errors.Transient(f"{type(exc).__name__}: {exc}", code=type(exc).__name__)


def _plain(result: model.Receipt | errors.DeliveryError) -> tuple:
    try:
        return dump_result(result)
    except (TypeError, ValueError) as exc:  # a fact of a type that cannot travel
        return dump_result(errors.Transient(f"{result!r} cannot travel: {exc}", code="unanswerable"))


async def _child_main() -> None:
    loop = asyncio.get_running_loop()
    logs.watch(loop)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb"))
    # The protocol owns the original stdout; anything printed by accident goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, out)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    await serve(reader, writer)


if __name__ == "__main__":
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)  # the daemon stops us by closing stdin
    logs.configure()  # JSON from the first line, before the daemon's specification says how
    asyncio.run(_child_main())
