"""Job and agent names: safe as file names and crontab arguments (a leaf: no models)."""

from __future__ import annotations

import re

JOB_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
