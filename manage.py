#!/usr/bin/env python
from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaireon.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    # Load the settings before Django looks the command up: a bad value stops
    # every command here, with one line naming the variable and EX_CONFIG (78),
    # instead of a traceback after "Unknown command" (the project's commands
    # are only known once the settings have loaded).
    try:
        settings.INSTALLED_APPS  # noqa: B018
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"Configuration error: {exc}\n")
        sys.exit(os.EX_CONFIG)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
