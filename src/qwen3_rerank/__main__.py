"""``python -m qwen3_rerank``: the same command line as ``qwen3-rerank``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
