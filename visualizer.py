#!/usr/bin/env python
"""An interactive page in the browser: images, attention maps and per-component latents of a GANformer.

Example (after the README Quickstart):
  python visualizer.py --model results/quickstart-000        # then open the address it prints

--model takes anything generate.py takes; a run folder is followed as new snapshots appear, and the page
also shows its training curves and latest sample grids. Needs the extra packages: pip install -r requirements-vis.txt
"""
from __future__ import annotations

import argparse
import ipaddress
import socket

from dnnlib.cli import FlagParser, add_shared_flags
from dnnlib.util import UserError, cli_main


def build_parser() -> FlagParser:
    p = FlagParser(description="Explore a GANformer's latents and attention in the browser.",
                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_shared_flags(p, "--model", "--gpus", "--ratio")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (another than loopback exposes the page)")
    p.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so that a taken port is one clear line and --port 0 reports the real port."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: {e.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot serve on {host}:{port}: {e.strerror}") from None
    sock.listen(64)
    return sock


def run(args: argparse.Namespace) -> None:
    try:
        import uvicorn
        from training.visualizer.app import create_app
    except ModuleNotFoundError as e:
        raise UserError(f"the visualiser needs the package {e.name}: pip install -r requirements-vis.txt") from None
    from training.sampling import pick_device
    from training.visualizer.session import ModelSession

    sock = bind(args.host, args.port)
    session = ModelSession(args.model, pick_device(args.gpus), ratio=args.ratio)
    app = create_app(session, allow_model_change=is_loopback(args.host))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {args.model} at http://{shown}:{port}/  (Ctrl+C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])


@cli_main
def main(argv=None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
