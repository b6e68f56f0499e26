"""Django settings for the extauth-bridge OAuth2/OIDC test IdP.

Configured from the environment by server.py (do not import directly):
  IDP_WORKDIR   directory holding db.sqlite3 and oidc_rsa_key.pem
  IDP_ISSUER    exact issuer, e.g. http://127.0.0.1:PORT/o
  IDP_ACCESS_TOKEN_EXPIRE_SECONDS  optional, default 3600
  IDP_LOG_LEVEL optional, default WARNING (DEBUG shows DOT's reasoning)
  IDP_PASSWORD_GRANT_ID_TOKEN optional, "1" = password grant also returns an
                id_token when scope has `openid` (not stock DOT behaviour)
TEST ONLY: fixed SECRET_KEY, MD5 password hashing, tokens stored in plaintext.
"""
import os
from pathlib import Path

WORKDIR = Path(os.environ["IDP_WORKDIR"])
ISSUER = os.environ["IDP_ISSUER"]

SECRET_KEY = "extauth-bridge-test-idp-NOT-A-SECRET"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "oauth2_provider",
]
# CommonMiddleware adds Content-Length; without it waitress answers with
# chunked encoding + "Connection: close" (no keep-alive). APPEND_SLASH is off:
# a path without its trailing slash is a plain 404, never a redirect.
# Sessions + auth only so /o/authorize/ doesn't crash.
APPEND_SLASH = False
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "idp.urls"
WSGI_APPLICATION = None
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.contrib.auth.context_processors.auth"]},
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(WORKDIR / "db.sqlite3"),
        "OPTIONS": {
            "timeout": 30,
            # write transactions take the lock up front: no lock-upgrade
            # deadlocks between waitress threads
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# Fast hashing for tests; CLIENT_SECRET_HASHER "default" also uses this.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
AUTH_PASSWORD_VALIDATORS = []

USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = False
LANGUAGE_CODE = "en-us"

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_ISS_ENDPOINT": ISSUER,
    "OIDC_RSA_PRIVATE_KEY": (WORKDIR / "oidc_rsa_key.pem").read_text(),
    "OAUTH2_VALIDATOR_CLASS": "idp.validators.BridgeOAuth2Validator",
    "SCOPES": {
        "openid": "OpenID Connect",
        "profile": "Profile (preferred_username)",
        "email": "E-mail address",
        "introspection": "Introspect tokens (RFC 7662)",
        "read": "Read",
    },
    # Scopes granted when the token request has no `scope` parameter. DOT's
    # default is ALL scopes (incl. `introspection`); we deliberately exclude it.
    "DEFAULT_SCOPES": ["openid", "profile", "email", "read"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("IDP_ACCESS_TOKEN_EXPIRE_SECONDS", "3600")),
    "PKCE_REQUIRED": True,
}
if os.environ.get("IDP_PASSWORD_GRANT_ID_TOKEN") == "1":
    OAUTH2_PROVIDER["OAUTH2_SERVER_CLASS"] = "idp.oidc_server.PasswordIdTokenServer"

LOG_LEVEL = os.environ.get("IDP_LOG_LEVEL", "WARNING").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "idp %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    "loggers": {
        # DOT logs an RFC 9700 "password grant is discouraged" warning on every
        # password grant; that is expected here.
        "oauth2_provider": {
            "level": LOG_LEVEL if LOG_LEVEL == "DEBUG" else "ERROR",
        },
        "django.request": {"level": "ERROR"},
        # "Task queue depth is N" whenever all waitress threads are busy
        "waitress.queue": {"level": "ERROR"},
    },
}
