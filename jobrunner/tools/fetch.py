"""`http_get`: one bounded GET over http(s), with the stdlib (no new dependency).

Bounded in time (socket timeout) and size (reads at most `max_bytes`), restricted to
http and https (also on redirects: no file:// or ftp:// through a Location header).
An HTTP error status is a failed call: the run stops instead of the agent guessing.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit

from jobrunner.tools.api import ToolResult

_SCHEMES = ("http", "https")
_TEXT_MARKERS = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded")


class _Redirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        if urlsplit(newurl).scheme not in _SCHEMES:
            raise urllib.error.HTTPError(newurl, code, f"redirect to a non-http URL: {newurl}",
                                         headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def http_get(url: str, timeout: float, max_bytes: int) -> ToolResult:
    """GET `url`; the result says status, content type, size read and whether it was cut."""
    if urlsplit(url).scheme not in _SCHEMES or not urlsplit(url).hostname:
        return ToolResult(ok=False, error=f"only http:// and https:// URLs, not {url!r}")
    opener = urllib.request.build_opener(_Redirects)
    request = urllib.request.Request(url, headers={"User-Agent": "jobrunner-http_get"})
    try:
        # A little under the call's own timeout, so the tool reports it itself.
        with opener.open(request, timeout=max(0.1, timeout * 0.9)) as response:
            body = response.read(max_bytes + 1)
            status = response.status
            content_type = response.headers.get("Content-Type", "")
            charset = response.headers.get_content_charset() or "utf-8"
            final_url = response.geturl()
    except urllib.error.HTTPError as exc:
        return ToolResult(ok=False, error=f"HTTP {exc.code} {exc.reason} from {url}")
    except TimeoutError:
        return ToolResult(ok=False, error=f"no answer from {url} within {timeout:g}s")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return ToolResult(ok=False, error=f"no answer from {url} within {timeout:g}s")
        return ToolResult(ok=False, error=f"cannot fetch {url}: {reason}")
    except (OSError, ValueError) as exc:
        return ToolResult(ok=False, error=f"cannot fetch {url}: {exc}")
    truncated = len(body) > max_bytes
    body = body[:max_bytes]
    data = {"url": final_url, "status": status, "content_type": content_type or None,
            "bytes": len(body), "truncated": truncated}
    if truncated:
        data["note"] = f"the response was cut at {max_bytes} bytes"
    if not content_type or any(m in content_type.lower() for m in _TEXT_MARKERS):
        data["text"] = body.decode(charset, errors="replace")
    else:
        data["note"] = (data.get("note", "") + "; " if truncated else "") + \
            f"binary content ({content_type}) not shown"
    return ToolResult(data=data)
