"""Test settings: the real settings module, with a test secret and its own state dir.

Child processes of the drain engine inherit DJANGO_SETTINGS_MODULE=tests.settings
and the REDIS_URL the fixtures put in the environment.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-0123456789abcdef")
os.environ.setdefault(
    "KAIREON_STATE_DIR", os.path.join(tempfile.gettempdir(), "kaireon-tests")
)
os.environ.setdefault("DEBUG", "0")

from kaireon.settings import *  # noqa: F403
from kaireon.settings import DATABASES, STATE_DIR

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so that tests with threads and child processes
    # share one database.
    DATABASES["default"]["TEST"] = {
        "NAME": str(STATE_DIR / f"test-{os.getpid()}.sqlite3")
    }

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# whitenoise warns on every request when the static root does not exist.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405
METERING_FLUSH_INTERVAL_S = 0  # tests flush explicitly; no background writer
