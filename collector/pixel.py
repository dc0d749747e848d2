"""The answers the collector gives: one cached GIF and fixed header sets."""

from __future__ import annotations

import base64

from multidict import CIMultiDict, CIMultiDictProxy

# The smallest transparent 1x1 GIF89a (42 bytes), made once at import.
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

# Nothing between the pixel and the mail client may reuse it: every open must
# reach us. No cookies are ever set.
NO_STORE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
PIXEL_HEADERS = CIMultiDictProxy(CIMultiDict({"Content-Type": "image/gif", **NO_STORE}))
NOT_FOUND_BODY = b"404: this tracked link is not valid.\n"
