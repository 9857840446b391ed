"""An SMTP server for benchmarks, in its own process: accepts everything and appends
"<arrival time> <Message-ID> <recipients>" per message to the file given as the first argument.

    python bench/smtp_sink.py ARRIVALS_FILE PORT [DATA_REPLY_DELAY_MS]

With a delay, the reply to the end of each message's data comes that many
milliseconds late, as from a server that checks and queues a message before it
accepts it, or from one at a network's distance: the time a real server takes.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from email.parser import BytesHeaderParser
from typing import Any

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, path: str, delay: float = 0.0) -> None:
        self.delay = delay
        self.out = open(path, "a", buffering=1)  # noqa: SIM115 - line-buffered for the reader
        self.parser = BytesHeaderParser()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        arrived = time.time()
        message_id = self.parser.parsebytes(envelope.original_content or envelope.content)["Message-ID"]
        self.out.write(f"{arrived:.6f} {message_id} {','.join(envelope.rcpt_tos)}\n")
        if self.delay:
            await asyncio.sleep(self.delay)  # the server's own time to accept the message
        return "250 OK"


if __name__ == "__main__":
    controller = Controller(
        Sink(sys.argv[1], float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.0),
        hostname="127.0.0.1",
        port=int(sys.argv[2]),
    )
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    controller.stop()
