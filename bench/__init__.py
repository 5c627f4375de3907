"""Benchmarks against the running HTTP API: load (latency, throughput) and retrieval quality.

``bench/`` talks to a server over HTTP only, never to ``service/`` in-process, so what it measures
is what a client of the deployed service sees, and the same load code can be pointed at a peer's
OpenAI-compatible ``/v1/embeddings`` server for a like-for-like comparison.
"""
