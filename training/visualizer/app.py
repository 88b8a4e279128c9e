"""The visualiser's web app (Starlette): a static page and a small JSON API over a ModelSession.

Model work runs in a worker thread under the session's lock (one call at a time, never on the event
loop). Bad input becomes {"error": message} with status 400; an unexpected exception is logged and
answered with status 500; neither stops the server.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dnnlib.util import UserError
from training.visualizer.projection import MAX_UPLOAD_BYTES
from training.visualizer.run_folder import GRIDS, latest_grid, run_summary
from training.visualizer.session import ModelSession, RenderRequest

STATIC = Path(__file__).parent / "static"
MAX_STEPS = 10_000


async def _guarded(fn: Callable[[], Any], lock=None) -> Response:
    """Run fn in a worker thread (under `lock` if given) and turn its result or failure into a response."""
    def call():
        if lock is None:
            return fn()
        with lock:
            return fn()
    try:
        result = await run_in_threadpool(call)
    except UserError as e:
        return JSONResponse({"error": str(e)}, status_code=400)
    except Exception as e:  # noqa: BLE001  (the page gets a message, the server keeps serving)
        traceback.print_exc(file=sys.stderr)
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, status_code=500)
    return result if isinstance(result, Response) else JSONResponse(result)


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError:
        raise UserError("the request body is not valid JSON") from None


def create_app(session: ModelSession, allow_model_change: bool = True) -> Starlette:
    """The app for one session. `allow_model_change=False` refuses loading other paths (non-loopback hosts)."""

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def info(request: Request) -> Response:
        def get():
            # Polled every few seconds: while a long call (a projection) holds the model, answer without
            # following the run folder rather than queue up behind it.
            if session.lock.acquire(blocking=False):
                try:
                    session.follow()
                finally:
                    session.lock.release()
            return {**session.info(), "model_change": allow_model_change}
        return await _guarded(get)

    async def render(request: Request) -> Response:
        try:
            req = RenderRequest.parse(await _json_body(request))
        except UserError as e:
            return JSONResponse({"error": str(e)}, status_code=400)

        def run():
            session.follow()
            return session.render(req)
        return await _guarded(run, session.lock)

    async def model(request: Request) -> Response:
        if not allow_model_change:
            return JSONResponse({"error": "loading another model is only allowed when serving on loopback"},
                                status_code=403)
        try:
            body = await _json_body(request)
            source = body.get("source", "") if isinstance(body, dict) else ""
        except UserError as e:
            return JSONResponse({"error": str(e)}, status_code=400)

        def load():
            session.load(source)
            return session.info()
        return await _guarded(load, session.lock)

    async def run_info(request: Request) -> Response:
        if session.run_dir is None:
            return JSONResponse({"error": "the model is not a run folder"}, status_code=404)
        return await _guarded(lambda: run_summary(session.run_dir))

    async def grid(request: Request) -> Response:
        name = request.path_params["name"]
        path = latest_grid(session.run_dir, name) if session.run_dir is not None and name in GRIDS else None
        if path is None:
            return JSONResponse({"error": f"no {name} grid in this run yet"}, status_code=404)
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def project(request: Request) -> Response:
        if int(request.headers.get("content-length") or 0) > MAX_UPLOAD_BYTES:
            return JSONResponse({"error": f"the upload is larger than {MAX_UPLOAD_BYTES >> 20} MB"}, status_code=413)
        try:
            steps = int(request.query_params.get("steps", "100"))
            if not 1 <= steps <= MAX_STEPS:
                raise ValueError
        except ValueError:
            return JSONResponse({"error": f"steps must be an integer in 1..{MAX_STEPS}"}, status_code=400)
        data = await request.body()
        return await _guarded(lambda: session.project(data, steps), session.lock)

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/render", render, methods=["POST"]),
        Route("/api/model", model, methods=["POST"]),
        Route("/api/run", run_info),
        Route("/api/run/grid/{name}", grid),
        Route("/api/project", project, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)
