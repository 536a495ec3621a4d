from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "Create the first admin account if no superuser exists, with a random "
        "password printed once. Does nothing when one exists."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--username",
            default="admin",
            help="the superuser to create when none exists (default: %(default)s)",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("admin account: exists (unchanged)")
            return
        password = secrets.token_urlsafe(18)  # 144 bits, 24 characters
        user = User(username=opts["username"], email="")
        # create_superuser does not run AUTH_PASSWORD_VALIDATORS: the password
        # printed must be one the admin's own "change password" would accept.
        validate_password(password, user)
        User.objects.create_superuser(
            username=opts["username"], email="", password=password
        )
        self.stdout.write(
            f"admin account created: user {opts['username']!r}, password {password}\n"
            "This password is shown once. Change it in the admin (top right)."
        )
