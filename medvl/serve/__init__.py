"""Serving a trained model over HTTP: `app` (FastAPI endpoints), `uploads` (reading and checking what a request
sends), `batcher` (dynamic batching), `limits` (what a request may hold, and the API's errors), `server` (uvicorn,
blocking or in a thread)."""
