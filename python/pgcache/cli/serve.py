"""pgcache serve, ml-service and config: the services on uvicorn, the effective configuration."""

from __future__ import annotations

import argparse
import sys

from pgcache.cli.exits import EXIT_OK

# --- serve, ml-service, config -------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pgcache.config import Settings
    from pgcache.service.app import create_app

    settings = Settings.load()
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return EXIT_OK


def ml_service(args: argparse.Namespace) -> int:
    from pgcache.ml import reference as mlservice

    return mlservice.main(
        ["--host", args.host, "--port", str(args.port), "--log-level", args.log_level]
    )


def config(args: argparse.Namespace) -> int:
    from pgcache.config import Settings

    settings = Settings.load() if args.env_file is None else Settings.from_env_file(args.env_file)
    sys.stdout.write(f"{settings}\n")
    return EXIT_OK
