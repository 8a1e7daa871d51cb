"""
Tests of C{twistd tcpserver --metrics}: the real twistd in a subprocess,
scraped over HTTP on 127.0.0.1 and read with C{prometheus_client}'s own
parser of the text format, alone and with C{--workers 2}.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.python.usage import UsageError

import twisted_tcp as tt
from twisted_tcp import _twistd
from twisted_tcp._metrics import metrics_page
from twisted_tcp._stats import DurationCounter, ServerStats

from .conftest import LOCAL, WAIT, raw_client, sleep, within
from .processes import Process, start  # noqa: F401 (a fixture)
from .test_per_peer_and_stats import refused_from
from .test_workers import listening_on, twistd, workers_argv  # noqa: F401 (twistd: a fixture)

parser = pytest.importorskip("prometheus_client.parser")

ECHO = "twisted_tcp.examples.echo:handle"
METRICS_ON = re.compile(r"metrics \(Prometheus\) on ([\d.]+):(\d+)")


async def scrape(where: tt.WhereToConnect, accept: bytes = b"text/plain") -> dict[str, float]:
    """GET the metrics page over HTTP; return each sample's value by name (with labels)."""

    async def get(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> bytes:
        writer.write(b"GET /metrics HTTP/1.0\r\nAccept: " + accept + b"\r\n\r\n")
        return await reader.contents()

    response = await within(tt.with_connection(where, get, timeout=WAIT))
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), head
    assert b"Content-Type: text/plain" in head
    samples = {}
    for family in parser.text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


async def metrics_of(process: Process) -> tt.WhereToConnect:
    match = await process.wait_for(METRICS_ON)
    return tt.to_host_and_port(match.group(1), int(match.group(2)))


async def until_scraped(
    where: tt.WhereToConnect, done: Callable[[dict[str, float]], bool]
) -> dict[str, float]:
    """Scrape until C{done(samples)} (the workers report each second); bounded."""

    async def poll() -> dict[str, float]:
        while not done(samples := await scrape(where)):
            await sleep(0.1)
        return samples

    return await within(poll(), WAIT)  # type: ignore[no-any-return]


async def echo_lines(where: tt.WhereToConnect, n: int) -> None:
    """Echo one line of 7 bytes (with its newline) on each of C{n} connections."""

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.write_line(b"a line")
        assert await reader.read_line() == b"a line"

    for _ in range(n):
        await within(tt.with_connection(where, f, timeout=WAIT))


@pytest_twisted.ensureDeferred
async def test_metrics_of_one_process(twistd: Callable[..., Process]) -> None:  # noqa: F811
    """
    --metrics serves the server's stats; --max-connections-per-peer refuses
    a second connection from 127.0.0.1, and the metrics count it.
    """
    process = twistd(
        "--port", f"tcp:0:interface={LOCAL}", "--handler", ECHO,
        "--metrics", f"tcp:0:interface={LOCAL}", "--max-connections-per-peer", "1",
    )  # fmt: skip
    where = await listening_on(process, ECHO)
    metrics = await metrics_of(process)
    await echo_lines(where, 3)
    held = raw_client(where.port)  # type: ignore[attr-defined]
    try:
        assert await refused_from(LOCAL, where.port)  # type: ignore[attr-defined]
        samples = await until_scraped(
            metrics, lambda s: s["twisted_tcp_connections_refused_per_peer_total"] == 1
        )
    finally:
        held.close()
    assert samples["twisted_tcp_connections"] == 1
    assert samples["twisted_tcp_connections_accepted_total"] == 5
    assert samples["twisted_tcp_received_bytes_total"] == 21
    assert samples["twisted_tcp_sent_bytes_total"] == 21
    assert samples["twisted_tcp_handler_duration_seconds_count"] == 3
    assert samples['twisted_tcp_handler_duration_seconds_bucket{le="+Inf"}'] == 3
    assert f"{LOCAL} is at max_connections_per_peer (1); closing its new" in process.output()


@pytest_twisted.ensureDeferred
async def test_metrics_of_the_workers_together(twistd: Callable[..., Process]) -> None:  # noqa: F811
    """With --workers 2, one endpoint reports what both workers counted."""
    process = twistd(*workers_argv("--handler", ECHO, "--metrics", f"tcp:0:interface={LOCAL}"))
    where = await listening_on(process, ECHO)
    metrics = await metrics_of(process)
    await echo_lines(where, 8)
    samples = await until_scraped(
        metrics, lambda s: s["twisted_tcp_handler_duration_seconds_count"] == 8
    )
    assert samples["twisted_tcp_connections_accepted_total"] == 8
    assert samples["twisted_tcp_received_bytes_total"] == 8 * 7
    assert samples["twisted_tcp_connections"] == 0


@pytest_twisted.ensureDeferred
async def test_metrics_port_in_use(twistd: Callable[..., Process]) -> None:  # noqa: F811
    """A --metrics port in use ends twistd with status 1 and says which option."""
    taken = socket.socket()
    try:
        taken.bind((LOCAL, 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = twistd("--port", f"tcp:0:interface={LOCAL}", "--handler", ECHO,
                         "--metrics", f"tcp:{port}:interface={LOCAL}")  # fmt: skip
        assert await process.exited() == 1
    finally:
        taken.close()
    assert f"cannot listen on tcp:{port}:interface={LOCAL} (--metrics)" in process.output()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metrics", "nope"], "--metrics must be a port number"),
        (["--metrics", "70000"], "--metrics must be between 0 and 65535"),
        (["--metrics", "9000"], "--metrics 9000: that is where the server listens"),
        (["--max-connections-per-peer", "0"], "--max-connections-per-peer must be at least 1"),
        (["--max-connections-per-peer", "x"], "--max-connections-per-peer must be a whole"),
    ],
)
def test_option_errors(args: list[str], message: str) -> None:
    options = _twistd.Options()
    with pytest.raises(UsageError, match=re.escape(message)):
        options.parseOptions(["--port", "9000", "--handler", ECHO, *args])


def test_metrics_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the extra installed, --metrics says which extra to install."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(UsageError, match=re.escape("pip install 'twisted_tcp[metrics]'")):
        _twistd.Options().parseOptions(["--port", "9000", "--handler", ECHO, "--metrics", "9100"])


def test_the_page_says_every_stat() -> None:
    """Each field of ServerStats is one sample of the page, in both formats."""
    counter = DurationCounter()
    counter.add(0.003)
    stats = ServerStats(
        connections=1, parked=2, handshakes=3, accepted=4, refused_per_peer=5,
        bytes_received=6, bytes_sent=7, handler_errors=8, handler_seconds=counter.histogram(),
    )  # fmt: skip
    text, content_type = metrics_page(lambda: stats)
    assert content_type.startswith("text/plain")
    samples: dict[str, Any] = {
        s.name + str(s.labels.get("le", "")): s.value
        for family in parser.text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    assert samples["twisted_tcp_connections"] == 1
    assert samples["twisted_tcp_connections_parked"] == 2
    assert samples["twisted_tcp_tls_handshakes"] == 3
    assert samples["twisted_tcp_connections_accepted_total"] == 4
    assert samples["twisted_tcp_connections_refused_per_peer_total"] == 5
    assert samples["twisted_tcp_received_bytes_total"] == 6
    assert samples["twisted_tcp_sent_bytes_total"] == 7
    assert samples["twisted_tcp_handler_errors_total"] == 8
    assert samples["twisted_tcp_handler_duration_seconds_bucket0.001"] == 0
    assert samples["twisted_tcp_handler_duration_seconds_bucket0.005"] == 1
    assert samples["twisted_tcp_handler_duration_seconds_sum"] == pytest.approx(0.003)
    open_text, open_type = metrics_page(lambda: None, "application/openmetrics-text")
    assert open_type.startswith("application/openmetrics-text")
    assert open_text.endswith(b"# EOF\n") and b"twisted_tcp_connections 0" in open_text


@pytest_twisted.ensureDeferred
async def test_what_a_stopping_worker_counts_reaches_the_metrics(
    twistd: Callable[..., Process],  # noqa: F811
) -> None:
    """
    A connection still open when its worker is told to stop (SIGHUP: a
    rolling restart) goes on being served, and what the worker counted
    until it exited is in the metrics: its last report is not lost.
    """
    # (A shutdown timeout long enough for a slow machine: the connection must
    # outlive the SIGHUP by a few exchanges.)
    process = twistd(
        *workers_argv("--handler", ECHO, "--metrics", f"tcp:0:interface={LOCAL}"),
        "--shutdown-timeout", "10",
    )  # fmt: skip
    where = await listening_on(process, ECHO)
    metrics = await metrics_of(process)
    _sock, reader, writer = await within(tt.connect(where, timeout=WAIT))
    try:
        writer.write_line(b"hi")
        assert await within(reader.read_line()) == b"hi"
        process.popen.send_signal(signal.SIGHUP)
        await process.wait_for(re.compile(r"stopping: no new connections; .* for 1 connection"))
        writer.write_line(b"x" * 1000)
        assert await within(reader.read_line()) == b"x" * 1000
    finally:
        await within(writer.close())
    samples = await until_scraped(
        metrics, lambda s: s["twisted_tcp_handler_duration_seconds_count"] == 1
    )
    assert samples["twisted_tcp_received_bytes_total"] == 3 + 1001
    assert samples["twisted_tcp_sent_bytes_total"] == 3 + 1001
    assert samples["twisted_tcp_connections"] == 0
