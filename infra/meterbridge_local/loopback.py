"""The lifecycle every loopback HTTP server of the local stack shares."""

import threading
from http.server import ThreadingHTTPServer


def serve_in_background(
    server: ThreadingHTTPServer, name: str, poll_interval: float
) -> threading.Thread:
    """Serve on a daemon thread; `poll_interval` bounds how long stop() waits."""
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": poll_interval},
        name=name,
        daemon=True,
    )
    thread.start()
    return thread


def stop_serving(server: ThreadingHTTPServer, thread: threading.Thread | None) -> None:
    """Stop the serving thread (if started), wait for it, and close the socket."""
    if thread is not None:
        server.shutdown()
        thread.join()
    server.server_close()
