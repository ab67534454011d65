"""``petalapor serve``: the HTTP service under uvicorn."""

from __future__ import annotations

import argparse

from petalapor.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command."""
    parser = sub.add_parser("serve", help="serve the API and maps (uvicorn)")
    parser.add_argument(
        "--host", help="address to listen on (default PETALAPOR_API_HOST or 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, help="port (default PETALAPOR_API_PORT or 8000)")
    parser.add_argument("--workers", type=int, default=1)
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    """Run uvicorn on the app factory."""
    import sys

    import uvicorn

    from api.routes.pages import missing_vendor_files

    missing = missing_vendor_files()
    if missing:
        print(
            f"warning: the map pages will not work: {len(missing)} JavaScript/CSS files are not "
            f"installed (first: {missing[0]}); run `npm ci` in web_map/ (./dev up does)",
            file=sys.stderr,
        )
    settings = Settings()
    host = args.host or settings.api.host
    port = args.port or settings.api.port
    base = f"http://{host}:{port}"
    print(
        f"petalapor on {base}/\n"
        f"  planner map    {base}/map\n"
        f"  OPD view       {base}/opd (an OPD or admin key: petalapor keys create)\n"
        f"  embed builder  {base}/embed/builder\n"
        f"  data sources   {base}/sources\n"
        f"  API docs       {base}/docs"
    )
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=args.workers,
        log_level="info",
    )
    return 0
