"""Where llmhost keeps, on the controller, what it remembers between runs: digests of local
files, and the facts each host's last runs read."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmhost"
