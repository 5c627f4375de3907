"""Reference servers for the side-by-side comparison (docs/PERFORMANCE.md, peers)."""
