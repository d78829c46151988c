"""The composition root: configuration → store, channels, renderer, dispatcher → aiohttp app.

The only module that knows the concrete store and channel classes (through the URL and the entry
points). Background work lives in `cleanup_ctx`, so it stops with the app; it begins only once the
app is known to listen (`listening`), never before: a provider's receipts for what it sends must
find the port open, and Twilio posts each status callback once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import errno
import itertools
import resource
from collections.abc import Callable

import structlog
from aiohttp import http_exceptions, web, web_protocol
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from alertd import channels, config as config_mod, dispatcher, metrics, model, progress, render, retry, store, systemd, web as web_mod
from alertd.channels import remote

log = structlog.get_logger("alertd.app")

HOUSEKEEPING_SECONDS = 1.0
FD_RESERVE = 256  # descriptors kept from clients: the store, provider connections, sending processes' pipes
DESCRIPTORS_WANTED = 65536  # the soft limit sought when the hard one is unlimited
ACCEPT_LOG_SECONDS = 10.0  # at most one "out of file descriptors" line per interval, with the count
BAD_REQUEST_LOG_SECONDS = 10.0  # the same for requests aiohttp cannot parse (a scanner's garbage)
OUT_OF_FDS = {errno.EMFILE: "EMFILE", errno.ENFILE: "ENFILE"}


class Workers:
    """The background work of an app: it begins once the app listens, it ends with the app."""

    def __init__(self) -> None:
        self.listening = asyncio.Event()
        self.told = False  # by `listening`, whose caller then hears why the work cannot begin
        self.begun: asyncio.Task | None = None  # the beginning, once the app has started
        self.stack = contextlib.AsyncExitStack()  # how to end what has begun, last begun first


WORKERS = web.AppKey("workers", Workers)


def build_channels(cfg: config_mod.Config) -> dict[str, channels.Channel]:
    built = {}
    for name, section in cfg.channels.items():
        context = channels.Context(public_url=cfg.server.public_url, name=name)
        if section.processes:  # the provider calls on other cores
            built[name] = remote.Remote(
                section.plugin, section.settings, context, section.processes, cfg.log.level, cfg.log.format
            )
        else:
            built[name] = channels.load(section.plugin)(section.settings, context)
    return built


def build_dispatcher(
    cfg: config_mod.Config, db: store.Store, clock: Callable[[], dt.datetime]
) -> dispatcher.Dispatcher:
    d = cfg.dispatcher
    return dispatcher.Dispatcher(
        db,
        build_channels(cfg),
        render.Renderer(
            cfg.render.templates, cfg.render.default_locale, cfg.render.sms_max_segments,
            cfg.render.push_max_bytes, cfg.server.display_timezone,
        ),
        retry.Policy(d.max_attempts, d.backoff_base, d.backoff_max),
        dispatcher.Settings(
            batch_size=d.batch_size, lease=dt.timedelta(seconds=d.lease_seconds),
            plan_chunk=d.plan_chunk, test_recipients=cfg.alerts.test_recipients,
        ),
        clock=clock,
    )


def twilio_tokens(cfg: config_mod.Config) -> tuple[str, ...]:
    return tuple(
        s.settings["auth_token"] for s in cfg.channels.values()
        if s.plugin == "twilio" and s.settings.get("auth_token")
    )


def build(
    cfg: config_mod.Config, *, clock: Callable[[], dt.datetime] = model.utcnow, run_workers: bool = True
) -> web.Application:
    """The daemon's aiohttp app. Its background work (sending, housekeeping) begins once it listens:
    tell it with `listening(app)` once its site has started, as `alertd serve` does; an app never told
    begins at its first answer, which proves it listens. With `run_workers=False` nothing is sent
    in the background: the caller drains with `app[web.DISPATCHER].run_until_idle()` (tests)."""
    app = web.Application(middlewares=[web_mod.problems, _deadlines], client_max_size=4 * 1024 * 1024)
    db = store.open_store(cfg.store.url)
    disp = build_dispatcher(cfg, db, clock)
    app[web_mod.STORE] = db
    app[web_mod.DISPATCHER] = disp
    app[web_mod.RENDERER] = disp.renderer
    app[web_mod.CLOCK] = clock
    app[web_mod.RECORDER] = progress.Recorder(db, clock)
    app[web_mod.METRICS] = disp.metrics = metrics.Metrics(disp.channels)
    app[web_mod.AUTH_FAILURES] = web_mod.auth_failures()
    app.on_response_prepare.append(web_mod.edges)
    app.on_shutdown.append(_end_streams)  # before the server waits for its handlers to finish
    app[web_mod.SETTINGS] = web_mod.Settings(
        cfg.server.public_url, twilio_tokens(cfg), max_streams_per_token=cfg.server.max_streams_per_token,
    )
    app[web_mod.STREAMS] = collections.Counter()
    app[CONNECTIONS] = Connections(Limits.of(cfg.server), app[web_mod.METRICS])
    app.add_routes(web_mod.routes())
    app[WORKERS] = Workers()
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_dispatcher_ctx if run_workers else _channels_ctx)
    if run_workers:
        app.on_response_prepare.append(_answered)
    if run_workers and cfg.systemd.watchdog:
        app.cleanup_ctx.append(_systemd_ctx)
    return app


async def _store_ctx(app: web.Application):
    await app[web_mod.STORE].open()
    yield
    await app[web_mod.STORE].close()


async def _end_streams(app: web.Application) -> None:
    app[web_mod.RECORDER].end_streams()


async def _channels_ctx(app: web.Application):
    disp = app[web_mod.DISPATCHER]
    for channel in disp.channels.values():
        await channel.start()
    yield
    await disp.interrupt()
    for channel in disp.channels.values():
        await channel.close()


async def listening(app: web.Application) -> None:
    """Say that the app's port accepts connections: the background work begins. Returns once it has
    begun (the sending processes started …), raising what kept it from beginning."""
    workers = app[WORKERS]
    workers.told = True
    workers.listening.set()
    if workers.begun is not None:
        await asyncio.shield(workers.begun)


async def _answered(request: web.Request, response: web.StreamResponse) -> None:
    request.app[WORKERS].listening.set()


async def _dispatcher_ctx(app: web.Application):
    workers = app[WORKERS]
    workers.begun = asyncio.create_task(_begin(app, workers), name="workers")
    yield
    workers.begun.cancel()  # if it is still waiting, or starting the channels
    await asyncio.gather(workers.begun, return_exceptions=True)
    await workers.stack.aclose()  # what has begun ends, the calls on the wire answered and recorded


async def _begin(app: web.Application, workers: Workers) -> None:
    await workers.listening.wait()
    try:
        await _begin_listening(app, workers.stack)
    except Exception as exc:
        if not workers.told:  # nobody waits for the beginning: this line is all that will say it
            log.error("the background work cannot begin", error=f"{type(exc).__name__}: {exc}")
        raise


async def _begin_listening(app: web.Application, stack: contextlib.AsyncExitStack) -> None:
    disp = app[web_mod.DISPATCHER]
    stack.push_async_callback(disp.stop)  # first: it closes the channels a failed start left open
    await disp.store.listen(disp.notice)  # other instances' plans and cancels (PostgreSQL)
    await disp.start()
    await app[web_mod.RECORDER].start()
    stack.push_async_callback(app[web_mod.RECORDER].stop)
    running: set[asyncio.Task] = set()

    async def housekeeping() -> None:
        running.add(task := asyncio.current_task())
        try:
            await disp.housekeeping()
        finally:
            running.discard(task)

    scheduler = AsyncIOScheduler(timezone="UTC")
    scheduler.add_job(
        housekeeping, "interval", seconds=HOUSEKEEPING_SECONDS, id="housekeeping", max_instances=1, coalesce=True,
    )
    scheduler.start()

    async def end_housekeeping() -> None:
        scheduler.shutdown(wait=False)
        await asyncio.gather(*running, return_exceptions=True)  # a pass under way ends before the store closes

    stack.push_async_callback(end_housekeeping)


async def _systemd_ctx(app: web.Application):
    async def alive() -> None:
        await app[web_mod.STORE].ping()

    task = asyncio.create_task(systemd.watchdog_task(alive))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# -- the connections: what idle and slow clients may hold ------------------------------------------


@dataclasses.dataclass(frozen=True)
class Limits:
    keepalive_timeout: float = 15.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000

    @classmethod
    def of(cls, server: config_mod.Server) -> Limits:
        return cls(server.keepalive_timeout, server.header_timeout, server.body_timeout, server.max_connections)


class Connections:
    """The server's client connections. Each must send a whole request head within `header_timeout`
    of its first byte (of its opening, for the first request), and its body within `body_timeout`.
    At `max_connections`, a new connection closes the one idle the longest (no request under way),
    so that a flood of idle clients cannot keep out the one that brings an alert; so does each
    accept that fails for want of file descriptors. Requests under way (event streams included) are
    never closed to make room."""

    def __init__(self, limits: Limits, metrics_: metrics.Metrics) -> None:
        self.limits, self.metrics = limits, metrics_
        self.cap = limits.max_connections  # lowered by `fit` to the process's file descriptors
        self.open: dict[object, Connection] = {}  # by transport
        self.idle: dict[Connection, None] = {}  # idle the longest first
        self.out_of_fds = metrics.Tally(ACCEPT_LOG_SECONDS, self._say_out_of_fds)
        self.unparsable = metrics.Tally(BAD_REQUEST_LOG_SECONDS, _say_unparsable)

    def fit(self, descriptors: int) -> None:
        self.cap = max(1, min(self.limits.max_connections, descriptors - FD_RESERVE))
        if self.cap < self.limits.max_connections:
            log.warning("fewer connections than server.max_connections: the file descriptors allow no more",
                        max_connections=self.limits.max_connections, allowed=self.cap, descriptors=descriptors)

    def opened(self, conn: Connection) -> None:
        if len(self.open) >= self.cap and not self.shed(1):
            self.drop(conn, "over_capacity")
            return
        self.open[conn.transport] = conn
        self.idle[conn] = None
        self.expect_head(conn)

    def expect_head(self, conn: Connection) -> None:
        conn.deadline = asyncio.get_running_loop().call_later(self.limits.header_timeout, self._head_late, conn)

    def _head_late(self, conn: Connection) -> None:
        conn.deadline = None
        if not conn.busy:
            self.drop(conn, "head_timeout")

    def shed(self, count: int) -> int:
        """Close the `count` connections idle the longest; how many there were."""
        victims = list(itertools.islice(self.idle, count))
        for conn in victims:
            self.drop(conn, "evicted")
        return len(victims)

    def drop(self, conn: Connection, reason: str) -> None:
        self.metrics.dropped.labels(reason).inc()
        self.closed(conn)
        conn.force_close()

    def closed(self, conn: Connection) -> None:
        self.open.pop(conn.transport, None)
        self.idle.pop(conn, None)
        conn.cancel_deadline()

    def begins(self, transport: object) -> Connection | None:
        """A request's head arrived on this connection (None: not one of ours, a test's)."""
        conn = self.open.get(transport)
        if conn is not None:
            conn.busy = True
            conn.cancel_deadline()
            self.idle.pop(conn, None)
        return conn

    def ends(self, conn: Connection) -> None:
        conn.busy = False
        if conn.transport in self.open:
            self.idle[conn] = None

    def body_late(self, request: web.Request) -> None:
        if not request.content.is_eof():
            self.metrics.dropped.labels("body_timeout").inc()
            request.content.set_exception(web.HTTPRequestTimeout(
                text=f"the request body did not arrive within {self.limits.body_timeout:g} s"))

    def accept_failed(self, exc: OSError) -> None:
        self.metrics.accept_errors.inc()
        self.out_of_fds.add(OUT_OF_FDS[exc.errno])
        self.shed(1)  # the descriptor it frees lets the next accept through

    def _say_out_of_fds(self, count: int, kinds: dict[str, int], _sources: list[str]) -> None:
        log.error("out of file descriptors: connections refused", count=count, errors=kinds,
                  per_seconds=ACCEPT_LOG_SECONDS, connections=len(self.open), cap=self.cap)


def _say_unparsable(count: int, kinds: dict[str, int], clients: list[str]) -> None:
    log.warning("requests refused: not HTTP alertd can read (answered 400)", count=count, errors=kinds,
                clients=clients, per_seconds=BAD_REQUEST_LOG_SECONDS)


CONNECTIONS = web.AppKey("connections", Connections)


class Connection(web_protocol.RequestHandler):
    """aiohttp's handler of one connection, under the deadline of `Connections`. aiohttp bounds
    the wait for a first request and between two by `keepalive_timeout` alone, and a request
    head's arrival by nothing."""

    def __init__(self, connections: Connections, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.connections = connections
        self.busy = False
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.connections.opened(self)

    def data_received(self, data: bytes) -> None:
        if not self.busy and self.deadline is None and self.transport is not None:
            self.connections.expect_head(self)  # the first byte of the next request head
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.connections.closed(self)
        super().connection_lost(exc)

    def cancel_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def log_exception(self, *args, **kwargs) -> None:
        """aiohttp logs each request it cannot parse, traceback and all: counted instead."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, http_exceptions.HttpProcessingError) and args and len(args) > 1:
            self.connections.unparsable.add(type(exc).__name__, str(args[1]))
        else:
            super().log_exception(*args, **kwargs)

    def handle_error(self, request, status: int = 500, exc=None, message=None) -> web.StreamResponse:
        """aiohttp's own answers (a request it cannot parse) get the security headers too."""
        answer = super().handle_error(request, status, exc, message)
        web_mod.tighten(request.path, answer.headers)
        return answer


@web.middleware
async def _deadlines(request: web.Request, handler):
    connections = request.app[CONNECTIONS]
    conn = connections.begins(request.transport)
    late = None
    if request.body_exists and not request.content.is_eof():
        late = asyncio.get_running_loop().call_later(connections.limits.body_timeout, connections.body_late, request)
    try:
        return await handler(request)
    finally:
        if late is not None:
            late.cancel()
        if conn is not None:
            connections.ends(conn)


def runner(app: web.Application) -> web.AppRunner:
    """The runner of the daemon's app: idle keep-alive connections close after `keepalive_timeout`;
    a body left unread is not waited for (aiohttp's lingering would give a slow client 10 s more)."""
    return web.AppRunner(app, access_log=None, **_handler_settings(app[CONNECTIONS].limits))


def _handler_settings(limits: Limits) -> dict:
    return {"keepalive_timeout": limits.keepalive_timeout, "lingering_time": 0}


class Site(web.TCPSite):
    """`web.TCPSite`, its connections handled by `Connection` under `Connections`' limits."""

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        connections = self._runner.app[CONNECTIONS]
        connections.fit(descriptors())
        watch_accepts(loop, connections)
        server, settings = self._runner.server, _handler_settings(connections.limits)

        def protocol() -> Connection:
            return Connection(connections, server, loop=loop, access_log=None, **settings)

        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )


def descriptors() -> int:
    """The process's file descriptors: the soft limit, raised first to the hard one (LimitNOFILE=
    in the unit; systemd leaves the soft one at 1,024 for programs that use select())."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = DESCRIPTORS_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return DESCRIPTORS_WANTED if soft == resource.RLIM_INFINITY else soft


def watch_accepts(loop: asyncio.AbstractEventLoop, connections: Connections) -> None:
    """asyncio reports each accept that fails for want of descriptors to the loop's exception
    handler, up to the backlog's length per wake-up (thousands of lines a second), and retries a
    second later: count them, close an idle connection for each, say so once per interval."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in OUT_OF_FDS and "accept" in context.get("message", ""):
            connections.accept_failed(exc)
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
