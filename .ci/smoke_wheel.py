"""
The example server as a user runs it from the installed wheel: start
C{twistd tcpserver} (the TWISTD given), read the port it logs, echo one line
through it, stop it with SIGTERM.  Run from a directory outside the checkout,
so that only the installed package can be imported.  Exits non-zero, saying
why, on any failure; every wait is bounded.

    python smoke_wheel.py /path/to/venv/bin/twistd
"""

import re
import signal
import socket
import subprocess
import sys
import time

WAIT = 20.0


def main(twistd: str) -> None:
    args = [
        twistd,
        "-n",
        "--pidfile=",
        "tcpserver",
        "--port",
        "tcp:0:interface=127.0.0.1",
        "--handler",
        "twisted_tcp.examples.echo:handle",
    ]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + WAIT
        port = None
        assert server.stdout is not None
        while port is None:
            if time.monotonic() > deadline:
                sys.exit(f"twistd logged no 'listening on' line within {WAIT:g} s")
            line = server.stdout.readline()
            if not line:
                sys.exit(f"twistd exited ({server.wait()}) before listening")
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as client:
            client.sendall(b"hello from the wheel\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = client.recv(100)
                if not chunk:
                    break
                reply += chunk
        if reply != b"hello from the wheel\n":
            sys.exit(f"the echo server answered {reply!r}")
        server.send_signal(signal.SIGTERM)
        status = server.wait(WAIT)
        if status != -signal.SIGTERM:  # twistd stops cleanly, then dies of the signal it got
            sys.exit(f"twistd exited with status {status} after SIGTERM")
        print(f"the installed example server echoed a line on port {port} and stopped cleanly")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main(sys.argv[1])
