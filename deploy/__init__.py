"""Run mlx-interp as a per-user background service: launchd on macOS, systemd on Linux.

One description (`ServiceSpec`) is rendered by two renderers
(`launchd.render_plist`, `systemd.render_unit`); `installer` writes the files,
records them in a manifest, and drives launchctl / systemctl through a
replaceable `CommandRunner`.
"""

from .service import ServiceSpec

__all__ = ["ServiceSpec"]
