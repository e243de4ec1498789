"""The local SageMaker endpoint: a threaded HTTP server on loopback.

Point any boto3 ``sagemaker`` client at :meth:`LocalSageMaker.start`'s URL.  Jobs
read and write S3 through ordinary boto3 clients whose endpoint comes from the
environment (``AWS_ENDPOINT_URL``, moto's server in local mode), and every job
state change is handed to ``emit`` as the EventBridge event AWS would publish.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from m5flow_local.sagemaker.capacity import Capacity
from m5flow_local.sagemaker.models import SageMakerBackend
from m5flow_local.sagemaker.responses import SageMakerResponses

LOG = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    """Request handler that keeps one access-log line per API call out of the console."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        LOG.debug("%s %s", self.requestline, code)


class LocalSageMaker:
    """A SageMaker API that really trains and predicts with XGBoost 1.7.6.

    Parameters
    ----------
    emit
        Receives each ``SageMaker Training Job State Change`` / ``SageMaker Transform
        Job State Change`` event (full EventBridge envelope), in order, from one thread.
    workdir
        Where jobs keep downloaded channels, models and logs.
    region, account_id
        Used in ARNs and events.
    progress
        Receives a line for each step no event announces (a training job's secondary
        status, where its logs are), for a console to show.
    capacity
        Starts training jobs only while this machine's memory can hold them, and shares its
        cores among them (`capacity.Capacity`; default: what the operating system reports).
    quotas
        Instances of a type that training or transform jobs may hold at once, by AWS's quota
        names ("<type> for training job usage", "<type> for transform job usage"), beyond
        which the Create call fails with ResourceLimitExceeded; none by default.

    Example
    -------
    >>> sm = LocalSageMaker(print, Path("/tmp/sm"))          # doctest: +SKIP
    >>> url = sm.start()                                     # doctest: +SKIP
    >>> boto3.client("sagemaker", endpoint_url=url)          # doctest: +SKIP
    >>> sm.stop()                                            # doctest: +SKIP
    """

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], None],
        workdir: Path,
        *,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        progress: Callable[[str], None] | None = None,
        capacity: Capacity | None = None,
        quotas: Mapping[str, int] | None = None,
    ) -> None:
        self.emit = emit
        self.progress = progress
        self.capacity = capacity
        self.quotas = quotas
        self.workdir = Path(workdir)
        self.region = region
        self.account_id = account_id
        self.backend: SageMakerBackend | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a daemon thread; return the endpoint URL (``http://host:port``).

        Raises
        ------
        RuntimeError
            If already started.
        """
        if self._server is not None:
            raise RuntimeError("LocalSageMaker is already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.backend = SageMakerBackend(
            self.emit,
            self.workdir,
            region=self.region,
            account_id=self.account_id,
            progress=self.progress,
            capacity=self.capacity,
            quotas=self.quotas,
        )
        self._server = make_server(
            host,
            port,
            SageMakerResponses(self.backend),
            threaded=True,
            request_handler=_QuietHandler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-sagemaker", daemon=True
        )
        self._thread.start()
        url = f"http://{self._server.host}:{self._server.port}"  # the port bound, if 0 asked
        LOG.info("local SageMaker listening on %s", url)
        return url

    def stop(self) -> None:
        """Stop serving, stop running jobs (their processes too) and flush pending events."""
        from m5flow_local.sagemaker.training import kill_hosts

        try:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
            if self._thread is not None:
                self._thread.join()
            if self.backend is not None:
                self.backend.shutdown()
        finally:
            kill_hosts()  # any host the jobs' stop grace did not end in time, or a failed stop
            self._server = self._thread = self.backend = None
