"""jobrunner: run LLM agent jobs on cron schedules, safely."""

from jobrunner.tools.api import ToolResult, tool

__all__ = ["ToolResult", "tool", "__version__"]
__version__ = "0.1.0"
