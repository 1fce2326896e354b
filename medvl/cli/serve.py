"""`medvl serve` (the REST API) and `medvl demo` (the Gradio page)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from medvl.cli.common import generation_args, generation_overrides, sampling_args


def cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from medvl.infer.predictor import load_trained
    from medvl.serve.app import ServeSettings, create_app
    from medvl.serve.limits import Limits
    from medvl.serve.server import serve

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env, "")
        if not api_key:
            raise ValueError(
                f"--api-key-env {args.api_key_env}: that environment variable is empty or unset; "
                f"export {args.api_key_env}=SECRET first (the key is never given on the command line)"
            )
    limits = Limits(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        max_views=args.max_views,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
    )
    settings = ServeSettings(
        limits=limits, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, api_key=api_key
    )
    loaded = load_trained(args.checkpoint, device=args.device)
    gen = dataclasses.replace(loaded.config.generation, **generation_overrides(args))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print(
        f"serving {loaded.checkpoint} on http://{args.host}:{args.port} (docs at /docs; API key "
        f"{'required' if api_key else 'not required'}; batches of up to {args.max_batch_size})",
        file=sys.stderr,
    )
    serve(create_app(loaded, gen, settings), host=args.host, port=args.port)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import dataclasses

    from medvl.demo.app import create_demo, example_studies, launch
    from medvl.infer.predictor import load_trained

    loaded = load_trained(args.checkpoint, device=args.device)
    gen = dataclasses.replace(loaded.config.generation, **generation_overrides(args))
    examples = example_studies(loaded, folder=args.examples)
    print(
        f"demo of {loaded.checkpoint} on http://{args.host}:{args.port} ({len(examples)} example studies)",
        file=sys.stderr,
    )
    launch(create_demo(loaded, gen, examples), host=args.host, port=args.port)
    return 0


def add_serve(sub: Any) -> None:
    """Add `medvl serve`."""
    p = sub.add_parser(
        "serve",
        help="serve a checkpoint over HTTP (REST API with dynamic batching)",
        description="Serve a checkpoint as a REST API: POST /v1/reports for report models (/v1/classifications, "
        "/v1/regressions, /v1/generations or /v1/reconstructions for the other tasks; GET /v1/model names it), a "
        "multipart upload or JSON with base64 images of one study (and a 'question' field for unified checkpoints "
        "trained for VQA; GET /v1/model says whether one is taken); GET /v1/model, GET /health; OpenAPI at "
        "/openapi.json and /docs. Concurrent requests share forward passes (dynamic "
        "batching) through a bounded queue. Uploads stay in memory; the log holds a "
        "request id and timing only.",
    )
    p.add_argument("checkpoint", help="checkpoint directory, a run directory, or a folder from medvl export")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="require the API key held in environment variable VAR in each request's X-API-Key header",
    )
    p.add_argument("--max-batch-size", type=int, default=8, help="requests per forward pass (1 = no batching)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a ready batch waits for more requests")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting at most; beyond: 503 + Retry-After")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest image file (default 20 MB)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="most pixels per image (default 40M)")
    p.add_argument("--max-views", type=int, default=4, help="most images per request (default 4)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a request may wait for its report")
    generation_args(p)
    sampling_args(p)
    p.set_defaults(func=cmd_serve)


def add_demo(sub: Any) -> None:
    """Add `medvl demo`."""
    p = sub.add_parser(
        "demo",
        help="a web page (Gradio): upload an X-ray, get the report, findings and saliency",
        description="Serve a Gradio page: upload the views of a study (PNG, JPEG or DICOM), get the "
        "report with CheXpert findings highlighted and a Grad-CAM overlay of the image "
        "encoder; example studies come from the checkpoint's data set (the synthetic set "
        "after the quickstart) or --examples. Unified checkpoints trained for VQA get a "
        "question box; families that support dialogue also get a follow-up chat.",
    )
    p.add_argument("checkpoint", help="checkpoint directory, a run directory, or a folder from medvl export")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--examples", default=None, metavar="DIR", help="offer the studies of this folder as examples")
    generation_args(p)
    sampling_args(p)
    p.set_defaults(func=cmd_demo)
