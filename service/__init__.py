"""The serving stage: several encoders behind one HTTP API, with a Qdrant vector store.

Layering: this package imports ``encoders`` only; benchmarks talk to it over HTTP.
"""
