"""The package itself under the name ``preprocess``, for ``atlasloader``'s lazy exports.

``atlasloader.__getattr__`` returns ``getattr(module, name)`` of the module it imports; the
package's own ``preprocess`` attribute is the function, so importing the package there would
make ``atlasloader.preprocess`` the function or the package depending on what was imported
first. Pointing the export here makes it the package, always (like ``fields`` and ``data``).
"""

from __future__ import annotations

import sys

preprocess = sys.modules[__package__ or "atlasloader.preprocess"]
