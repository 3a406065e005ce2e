"""Prepares the example site; idempotent (a second run changes nothing and takes about a second).

    /usr/bin/python3 prepare.py

- migrates the sqlite database (DJANGO_SITE_DATA/db.sqlite3, default ./db.sqlite3);
- creates the superuser DJANGO_SUPERUSER_USERNAME (default "admin") with DJANGO_SUPERUSER_PASSWORD
  (default "osprey-admin") if there is no such user yet;
- collects the static files (the admin's CSS and JS) into ./static.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.chdir(HERE)
os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site_project.settings')
os.environ.setdefault('DJANGO_SUPERUSER_USERNAME', 'admin')
os.environ.setdefault('DJANGO_SUPERUSER_EMAIL', 'admin@example.com')
os.environ.setdefault('DJANGO_SUPERUSER_PASSWORD', 'osprey-admin')

import django  # noqa: E402
from django.core.management import call_command  # noqa: E402

django.setup()
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402

os.makedirs(settings.DATA_DIR, exist_ok=True)
call_command('migrate', interactive=False, verbosity=0)
username = os.environ['DJANGO_SUPERUSER_USERNAME']
if not get_user_model().objects.filter(username=username).exists():
    call_command('createsuperuser', interactive=False, verbosity=0)
call_command('collectstatic', interactive=False, verbosity=0)
print('prepared %s (database and media in %s; user %s)' % (HERE, settings.DATA_DIR, username))
