"""moto's server with HTTP/1.1 keep-alive, for benchmarks: `python -m bench.moto_keepalive PORT`.

`python -m moto.server` answers HTTP/1.0, so every boto3 call opens (and the server
threads) a new connection: CPU on both sides that AWS's endpoints, which keep
connections alive, do not cost. Same moto application, same backends; only the
connection handling differs. The tests keep moto's own server.
"""

import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


class KeepAliveHandler(MotoRequestHandler):
    protocol_version = "HTTP/1.1"


def main(argv: list[str]) -> int:
    port = int(argv[0])
    application = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1", port, application, threaded=True, request_handler=KeepAliveHandler
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
