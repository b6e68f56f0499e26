"""Idempotent seeding of users, OAuth2 applications and the introspection token.

Runs at every server start (cheap: MD5 hasher). Re-running resets passwords,
client secrets and flags to the values below and renews the introspection
token's expiry.
"""
import datetime
import hashlib
import secrets

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application

# username -> (password, email, is_active)
USERS = {
    "romeo": ("iheartjuliet", "romeo@montague.example", True),
    "juliet": ("wherefore:art thou", "juliet@capulet.example", True),
    "mercutio": ("pässwörd✓", "mercutio@verona.example", True),
    "tybalt": ("fightme", "tybalt@capulet.example", False),  # inactive
}
ADMIN_USERNAME = "idp-admin"  # owns the apps + introspection token, no usable password

# client_id -> (name, client_type, plaintext secret or None for public)
APPLICATIONS = {
    "bridge-basic": ("bridge-basic", Application.CLIENT_CONFIDENTIAL, "basic-secret"),
    "bridge-post": ("bridge-post", Application.CLIENT_CONFIDENTIAL, "post-secret"),
    "bridge-public": ("bridge-public", Application.CLIENT_PUBLIC, None),
    "weird id:é": ("bridge-weird", Application.CLIENT_CONFIDENTIAL, "s3cr:et&+%"),
}

INTROSPECTION_TOKEN = "introspect-token-123"
INTROSPECTION_TOKEN_SCOPE = "introspection"


@transaction.atomic
def seed():
    User = get_user_model()

    admin, _ = User.objects.get_or_create(username=ADMIN_USERNAME)
    admin.set_unusable_password()
    admin.is_staff = admin.is_superuser = admin.is_active = True
    admin.save()

    for username, (password, email, active) in USERS.items():
        user, _ = User.objects.get_or_create(username=username)
        user.set_password(password)
        user.email = email
        user.is_active = active
        user.save()

    for client_id, (name, client_type, secret) in APPLICATIONS.items():
        app = Application.objects.filter(client_id=client_id).first() or Application(client_id=client_id)
        app.name = name
        app.user = admin
        app.client_type = client_type
        app.authorization_grant_type = Application.GRANT_PASSWORD
        app.algorithm = Application.RS256_ALGORITHM
        app.skip_authorization = True
        app.redirect_uris = ""
        app.hash_client_secret = True
        # Plaintext here; DOT's ClientSecretField hashes it on save(). The
        # public client gets a random (unknown) secret so that it can NOT
        # authenticate with an empty secret (e.g. at /o/introspect/).
        app.client_secret = secret if secret is not None else secrets.token_urlsafe(32)
        app.save()

    checksum = hashlib.sha256(INTROSPECTION_TOKEN.encode()).hexdigest()
    AccessToken.objects.filter(token_checksum=checksum).delete()
    AccessToken.objects.create(
        user=admin,
        application=None,
        token=INTROSPECTION_TOKEN,
        scope=INTROSPECTION_TOKEN_SCOPE,
        expires=timezone.now() + datetime.timedelta(days=1),
    )
