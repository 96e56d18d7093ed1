"""taro serve: the HTTP API, live events and web dashboard of one environment (docs/serve.md)."""

from __future__ import annotations

import os
import sys

from runtools.cli.common import add_env, say

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

    from runtools.env.base import Environment

HELP = "serve the environment over HTTP: JSON API, live events (SSE), web dashboard (docs/serve.md)"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
TOKEN_FILE = "serve.tokens"


def configure(p: argparse.ArgumentParser) -> None:
    add_env(p)
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, metavar="PORT", help="port (default 8765; 0: any free port)")
    p.add_argument("--token-file", metavar="FILE",
                   help="tokens, one a line: [read:|operate:]TOKEN [NAME] (default: $RUNTOOLS_TOKEN, "
                        "else a generated operate token kept in the environment's directory)")
    p.add_argument("--secure-cookie", action="store_true",
                   help="mark the page's sign-in cookie Secure (behind an HTTPS proxy)")


def token_home(env: Environment) -> str:
    """Where a generated token is kept: the environment's own directory (owner-only), or for an
    environment without one (a PostgreSQL URL) $RUNTOOLS_HOME/serve."""
    d = getattr(env, "dir", None)
    if not d:
        from runtools.env.local.paths import runtools_home

        d = os.path.join(runtools_home(), "serve")
    return os.path.join(d, TOKEN_FILE)


def tokens_for(args: argparse.Namespace, env: Environment) -> list:
    from runtools.server.auth import OPERATE, Token, generated_token, load_token_file, parse_token_lines

    tokens = []
    if args.token_file:
        tokens += load_token_file(args.token_file)
    env_token = os.environ.get("RUNTOOLS_TOKEN")
    if env_token:
        t = parse_token_lines(env_token, "$RUNTOOLS_TOKEN")[0]
        tokens.append(Token(t.secret, t.role if ":" in env_token.split()[0] else OPERATE,
                            t.name if t.name != "token 1" else "RUNTOOLS_TOKEN"))
    if tokens:
        return tokens
    path = token_home(env)
    made, created = generated_token(path)
    say(f"taro serve: {'created' if created else 'using'} an operate token in {path} (owner-only): "
        "send it as Authorization: Bearer TOKEN, or paste it into the page")
    return made


def run(args: argparse.Namespace) -> int:
    from runtools.errors import UsageError

    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be 0 to 65535")
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError("taro serve needs the serve extra: pip install 'runtools[serve]'") from None
    import socket

    from runtools.cli.views import env_of
    from runtools.server.app import build_app
    from runtools.server.auth import Auth

    env = env_of(args)
    tokens = tokens_for(args, env)
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it: no 40 ms stalls
    try:
        sock.bind((args.bind, args.port))
    except (OSError, socket.gaierror) as e:
        sock.close()
        raise UsageError(f"cannot listen on {args.bind}:{args.port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    host, port = sock.getsockname()[:2]
    if args.bind not in LOOPBACK and not args.bind.startswith("127."):
        say(f"taro serve: listening on {args.bind}, not only on this machine: anyone who can reach it and "
            "holds a token can use it (put HTTPS in front for other networks)")
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    app = build_app(env, Auth(tokens), secure_cookie=args.secure_cookie)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    sys.stdout.write(f"taro serve: listening on http://{shown}:{port} (environment {env.name})\n")
    sys.stdout.flush()
    try:
        server.run(sockets=[sock])
    finally:
        env.close()
    return 0
