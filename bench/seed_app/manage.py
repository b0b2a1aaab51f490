#!/usr/bin/env python
"""The seed-style baseline's manage.py (`migrate` creates its one table in bench_seed)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "seedchat.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
