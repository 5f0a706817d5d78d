"""``--dask-local N``: a Dask LocalCluster that memplan starts, in a process of its own.

A LocalCluster runs its scheduler and its nannies in the process that creates it: in memplan's
process they would cost it CPU for every task and every second (heartbeats, memory monitors),
on top of memplan's own work of submitting, receiving, aggregating and printing, and the fleet
would stop scaling sooner. So memplan starts a cluster host process (forked from its fork
server, so it ignores SIGINT as the workers do) which creates the LocalCluster, sends back the
scheduler's address, and closes the cluster when memplan says so or goes away (its pipe closes):
no cluster outlives memplan, even one killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import signal
from typing import Any, Dict, Iterator, Optional

from memplan.core.errors import UsageError
from memplan.fleet.backends import WORKER_MODULES, signals_deferred, start_forkserver

#: Dask's worker environment key that memplan unsets (see ``worker_environ()``).
TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
#: How long memplan waits for its LocalCluster to start, and then to close.
START_S = 120.0
CLOSE_S = 30.0


def worker_environ() -> Dict[str, Any]:
    """Dask configuration for the worker processes memplan starts (``--dask-local``).

    Dask's nannies export ``MALLOC_TRIM_THRESHOLD_=65536`` to every worker process
    (``distributed.nanny.pre-spawn-environ``), which doubles memplan's CPU time per host (see
    ``memplan.fleet.worker.tune_malloc``, which neutralises it in every worker process before its
    first host, on workers memplan did not start too). A ``None`` value unsets the variable where the installed
    distributed supports it; otherwise Dask's default stays (and the first task tunes malloc).
    """
    try:
        import dask
        from distributed.nanny import _get_env_variables
        with dask.config.set({TRIM_KEY: None}):
            supported = "MALLOC_TRIM_THRESHOLD_" not in _get_env_variables("distributed.nanny.pre-spawn-environ")
    except (ImportError, AttributeError, TypeError, ValueError):
        supported = False
    return {TRIM_KEY: None} if supported else {}


@contextlib.contextmanager
def local_cluster_config() -> Iterator[None]:
    """Dask configuration for memplan's own LocalCluster: worker processes fork from a fork
    server that ignores SIGINT (``start_forkserver()``: a Ctrl-C is memplan's to handle, not
    every worker's; restarted workers too), and without Dask's trim threshold."""
    import dask
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with dask.config.set({"distributed.worker.multiprocessing-method": method, **worker_environ()}):
        start_forkserver(["distributed", *WORKER_MODULES])
        yield


def serve_cluster(conn: Any, workers: int) -> None:
    """The cluster host process: start the LocalCluster, send ``("address", ADDRESS)`` (or
    ``("error", TEXT)``), keep it until a message or the end of the pipe, then close it. It
    prints nothing: memplan reports, and memplan may be gone (Ctrl-C during the start-up)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from distributed import LocalCluster
    try:
        # Loopback only; ":0": any free port for the scheduler's HTTP server.
        with local_cluster_config(), contextlib.redirect_stdout(io.StringIO()):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   protocol="tcp://", dashboard_address=":0", silence_logs=logging.CRITICAL)
    except Exception as exc:  # noqa: BLE001 - the parent reports it
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        with contextlib.suppress(EOFError, OSError):
            conn.send(("address", cluster.scheduler_address))
            conn.recv()
    finally:
        with contextlib.suppress(Exception):
            cluster.close()


class ClusterProcess:
    """memplan's side of the cluster host process."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.process: Any = None
        self.conn: Any = None

    def start(self) -> str:
        """The scheduler's address, once the cluster is up (``UsageError`` when it cannot start)."""
        with signals_deferred():
            ctx = start_forkserver(WORKER_MODULES)
            self.conn, child = ctx.Pipe(duplex=True)
            process = ctx.Process(target=serve_cluster, args=(child, self.workers),  # type: ignore[attr-defined]
                                  name="memplan Dask LocalCluster")
            try:
                process.start()
            except (OSError, EOFError) as exc:  # the fork server is gone (SIGTERM to the whole process group)
                child.close()
                self.conn.close()
                raise UsageError(f"cannot start a Dask LocalCluster of {self.workers} workers: "
                                 f"{type(exc).__name__}: {exc}") from None
            self.process = process
            child.close()
        reply = self._reply()
        if reply is None or reply[0] != "address":
            self.close()
            detail = reply[1] if reply is not None else "its process ended or did not answer in time"
            raise UsageError(f"cannot start a Dask LocalCluster of {self.workers} workers: {detail}")
        address: str = reply[1]
        return address

    def _reply(self) -> Optional[Any]:
        try:
            if self.conn.poll(START_S):
                return self.conn.recv()
        except (EOFError, OSError):
            pass
        return None

    def close(self) -> None:
        """Ask the cluster host to close the cluster and end; kill it if it takes too long."""
        if self.process is None:
            return
        with contextlib.suppress(OSError):
            self.conn.send("close")
        self.conn.close()
        self.process.join(CLOSE_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)
        self.process = None


__all__ = ["ClusterProcess", "local_cluster_config", "serve_cluster", "worker_environ"]
