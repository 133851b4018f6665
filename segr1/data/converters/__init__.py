"""One module per public dataset layout; each exposes `SPLITS` and `convert(root, out, split, **opts)`.

Dispatch by name lives in `segr1.data.convert`; shared pieces in `common`.
"""
