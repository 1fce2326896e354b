"""Serving a trained model over HTTP: `app` (FastAPI endpoints), `batcher` (dynamic batching), `limits` (what a
request may hold, and the API's errors), `server` (uvicorn, blocking or in a thread)."""
